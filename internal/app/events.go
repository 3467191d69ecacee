package app

import (
	"context"

	"callsig/calls"
	"callsig/handlers"
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

func (a *App) newEvents(opts Options) (*eventsPart, error) {
	return &eventsPart{}, nil
}
