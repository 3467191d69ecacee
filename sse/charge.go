package sse

import (
	"context"
	"fmt"
	"time"
)

// Charge counts bytes a stream wrote from the log against its user's
// share (the per-user rate limit) and returns how long the stream is to
// wait before it reads more: a stream resuming from an old id replays the
// user's whole kept log, megabytes for one request's worth, and a client
// reconnecting in a loop replayed it again and again (a review: 8 MB/s
// from one user within a rate limit that holds answers to 3.2 MB/s),
// each replay holding one of the shared read turns a page at a time.
// Events handed to a stream as they commit are not charged, nor the log
// reads of a live stream (a wake-up, a full buffer; with PerUserIDOrder
// every event from another node): only a replay, the catch-up of a stream
// resuming from its Last-Event-ID.
type Charge func(bytes int) (wait time.Duration)

type chargeKey struct{}

// WithCharge returns ctx carrying charge, for the request whose stream
// ServeEvents serves: the rate limit that knows the user attaches it.
func WithCharge(ctx context.Context, charge Charge) context.Context {
	return context.WithValue(ctx, chargeKey{}, charge)
}

func chargeFrom(ctx context.Context) Charge {
	c, _ := ctx.Value(chargeKey{}).(Charge)
	return c
}

// pay charges the bytes of a page a replay wrote from the log; the wait
// it owes, as of now, is served before the replay's next page (see pause).
func (st *stream) pay(bytes int) {
	if st.charge == nil || bytes <= 0 {
		return
	}
	if wait := st.charge(bytes); wait > 0 {
		st.owedUntil = time.Now().Add(wait)
	}
}

// pause serves what a replay owes before it reads its next page, writing
// the heartbeats that fall due meanwhile, until the stream ends. What it
// wrote goes out first (the client has paid for it), and it gives up its
// opener slot, if it holds one, as a write that blocks does (writeConn):
// a slot is held for reading and writing, and other users' openings
// queued behind a replay over its share waited out its pauses. No read
// turn is held meanwhile either.
func (st *stream) pause() error {
	d := time.Until(st.owedUntil)
	st.owedUntil = time.Time{}
	if d <= 0 {
		return nil
	}
	if err := st.flush(); err != nil {
		return err
	}
	st.releaseSlot()
	octx, ocancel := st.opContext()
	defer ocancel()
	if st.conn != nil && st.state.Load() == live {
		defer st.watchClient()()
	}
	st.h.m.replayWaits.Inc()
	t := time.NewTimer(d)
	defer t.Stop()
	beat, stop := st.beatDue()
	defer stop()
	for {
		select {
		case <-t.C:
			return nil
		case <-octx.Done():
			return fmt.Errorf("sse: wait to replay more of the log: %w", octx.Err())
		case <-beat:
			if err := st.beat(); err != nil {
				return err
			}
			beat = time.After(st.h.o.Heartbeat)
		}
	}
}
