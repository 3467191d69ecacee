package db

import (
	"context"

	"callsig/calls"
)

// LogWriter is what SaveLog writes with: a backend's statements, inside
// its write transaction.
type LogWriter interface {
	// InsertEvents appends evs to the log, in order, and sets each ID.
	InsertEvents(ctx context.Context, evs []calls.Event) error
	// SetInvitation records ev, an invitation just inserted, on its
	// invitee's row of c.
	SetInvitation(ctx context.Context, c *calls.Call, ev *calls.Event) error
	// InsertHook stores a webhook message and queues its deliveries;
	// queued is false when no enabled endpoint subscribes to it.
	InsertHook(ctx context.Context, h *calls.HookEvent) (queued bool, err error)
}

// SaveLog writes what a change causes after its call and user rows, the
// same on every backend: the events in order (ids assigned in place), each
// invitation's id on its invitee's row, and the webhook messages, counting
// in ch.HooksQueued those an endpoint subscribes to (the dispatcher is
// woken only for those).
func SaveLog(ctx context.Context, w LogWriter, ch *calls.Change) error {
	if err := w.InsertEvents(ctx, ch.Events); err != nil {
		return err
	}
	for i := range ch.Events {
		ev := &ch.Events[i]
		if ev.Type == calls.EventReceived {
			if err := w.SetInvitation(ctx, ch.Call, ev); err != nil {
				return err
			}
		}
	}
	ch.HooksQueued = 0
	for i := range ch.Hooks {
		queued, err := w.InsertHook(ctx, &ch.Hooks[i])
		if err != nil {
			return err
		}
		if queued {
			ch.HooksQueued++
		}
	}
	return nil
}
