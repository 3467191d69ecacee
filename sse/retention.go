package sse

import (
	"context"
	"time"
)

// prune deletes the events older than the retention period now and then
// every PruneEvery of clock time, until ctx is done. A Last-Event-ID below
// what is kept gets `event: reset` (see stream.expired).
func (h *Hub) prune(ctx context.Context) {
	for {
		// The next round is armed before this one prunes: a clock moved
		// on while it prunes (a test's, once it sees the prune) still
		// brings the next round.
		fired := make(chan struct{})
		t := h.o.Clock.AfterFunc(h.o.PruneEvery, func() { close(fired) })
		before := h.o.Clock.Now().Add(-h.o.Retention).UnixMilli()
		n, err := h.o.Log.PruneEvents(ctx, before)
		switch {
		case err != nil && ctx.Err() == nil:
			h.log.Error("prune event log", "err", err)
		case n > 0:
			h.m.pruned.Add(float64(n))
			h.log.Debug("pruned event log", "events", n, "before", time.UnixMilli(before).UTC())
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-fired:
		}
	}
}
