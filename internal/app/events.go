package app

import (
	"context"

	"callsig/calls"
	"callsig/sse"
)

// newEvents builds the SSE hub on the store's event log. The hub is the
// service's presence and one of its notifiers, and serves GET /events; it
// reports deliveries and presence to the service through svc and prunes
// the log after Config.EventRetention.
func (a *App) newEvents(ctx context.Context, opts Options, svc sse.Service) (*sse.Hub, error) {
	return sse.New(ctx, sse.Options{
		Log:        a.Store,
		Service:    svc,
		Clock:      opts.Clock,
		Logger:     a.log.With("component", "sse"),
		Registerer: a.Registry,
		Retention:  a.Config.EventRetention,

		MaxStreamsPerUser: a.Config.MaxStreamsPerUser,
	})
}

// hubService is the hub's sse.Service: the hub and calls.Service need each
// other (the service asks the hub who is online and tells it of commits,
// the hub reports deliveries and presence back), so the hub is built first
// and reports through this, pointed at the service before anything runs.
type hubService struct{ *calls.Service }
