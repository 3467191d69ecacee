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
//
// With PostgreSQL the hub follows ids per user (sse.PerUserIDOrder: they
// have no global commit order there), so every delivery is a read of the
// log; its streams may then hold half the pool (the default 2 readers
// suit SQLite's small read pool, where deliveries rarely read).
func (a *App) newEvents(ctx context.Context, opts Options, svc sse.Service) (*sse.Hub, error) {
	o := sse.Options{
		Log:        a.Store,
		Service:    svc,
		Clock:      opts.Clock,
		Logger:     a.log.With("component", "sse"),
		Registerer: a.Registry,
		Retention:  a.Config.EventRetention,

		MaxStreamsPerUser: a.Config.MaxStreamsPerUser,
		Heartbeat:         opts.StreamHeartbeat,
	}
	if IsPostgresDSN(a.Config.DB) {
		o.IDOrder = sse.PerUserIDOrder
		o.LogReaders = max(2, a.Config.PGMaxConns/2)
		o.CatchUpEvery = opts.EventCatchUp
	}
	if a.Presence != nil {
		o.Announce = a.Presence.Announce
	}
	return sse.New(ctx, o)
}

// hubService is the hub's sse.Service: the hub and calls.Service need each
// other (the service asks the hub who is online and tells it of commits,
// the hub reports deliveries and presence back), so the hub is built first
// and reports through this, pointed at the service before anything runs.
type hubService struct{ *calls.Service }
