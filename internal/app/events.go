package app

import (
	"context"

	"callsig/calls"
	"callsig/handlers"
	"callsig/sse"
)

// eventsPart is the SSE side: presence, live delivery and GET /events.
// Owned by the SSE work; nil fields mean "not wired".
type eventsPart struct {
	Presence calls.Presence
	Notifier calls.Notifier
	Stream   handlers.EventStream
	// Start runs background work once the service exists; the returned func
	// waits for it to stop after ctx is cancelled.
	Start func(ctx context.Context, svc *calls.Service) (wait func(), err error)
	// Shutdown ends open streams so clients resume elsewhere.
	Shutdown func()
}

// newEvents builds the SSE hub on the store's event log. The hub is the
// service's presence and one of its notifiers, and serves GET /events; its
// workers report deliveries and presence to the service and prune the log
// after Config.EventRetention.
func (a *App) newEvents(opts Options) (*eventsPart, error) {
	svc := &hubService{}
	hub, err := sse.New(context.Background(), sse.Options{
		Log:        a.Store,
		Service:    svc,
		Clock:      opts.Clock,
		Logger:     a.log.With("component", "sse"),
		Registerer: a.Registry,
		Retention:  a.Config.EventRetention,

		MaxStreamsPerUser: a.Config.MaxStreamsPerUser,
	})
	if err != nil {
		return nil, err
	}
	return &eventsPart{
		Presence: hub,
		Notifier: hub,
		Stream:   hub,
		Start: func(ctx context.Context, s *calls.Service) (func(), error) {
			svc.Service = s
			ran := make(chan error, 1)
			go func() { ran <- hub.Run(ctx) }()
			return func() { <-ran }, nil
		},
		Shutdown: hub.Shutdown,
	}, nil
}

// hubService is the hub's sse.Service: the hub and calls.Service need each
// other (the service asks the hub who is online and tells it of commits,
// the hub reports deliveries and presence back), so the hub is built first
// and reports through this, pointed at the service before the hub runs.
type hubService struct{ *calls.Service }
