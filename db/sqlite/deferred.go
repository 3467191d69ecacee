package sqlite

import (
	"context"
	"fmt"

	"callsig/calls"
)

// deferredRows holds the user rows and events of a claim's changes (see
// Store.UpdateDue) until they are written together, wideRows to an
// INSERT, where each change would run its own statements: a claim of 64
// invitations timing out writes its 192 events and 64 users in 16
// statements instead of 128, and fires 4 to 7 % more deadlines a second
// (BenchmarkFireDeadlines, docs/benchmarks.md). calls.Tx lets Save send
// its writes later, as long as the IDs are set by the time Update
// returns. The rows are written (flush) before the transaction reads
// what they would change, and before the claim returns.
//
// A failed write of them stays the claim's outcome (err): every later
// flush and Save returns it, so a claim whose fn went on past a failed
// read cannot commit its calls' rows without their users and events. The
// write at the claim's end comes after fn has told the scheduler its
// deadlines fired (calls.ClaimBatching.Pipelined): when it fails (an I/O
// error, a full disk), the next claim may already be queued and take the
// same deadlines while the failed claim's are fired one by one. That is
// work done twice, not a deadline fired twice: every change reads the
// rows under the one writer, and a deadline already fired only clears
// itself (calls.Expire).
type deferredRows struct {
	users  []any           // sqlUpsertUser's arguments, userRowArgs a row
	events [][]calls.Event // each Save's, in order; flush sets their IDs in place
	err    error
}

// holdsCall reports whether a row of the call seq is waiting.
func (d *deferredRows) holdsCall(seq int64) bool {
	for i := 0; i < len(d.users); i += userRowArgs {
		if d.users[i] == seq {
			return true
		}
	}
	return false
}

// flush writes the rows t holds back, if any: the users, then the events
// in the order they were saved, which sets their IDs. A failure leaves
// rows the writer's cache cannot know of, as a failed Save does.
func (t *callsTx) flush(ctx context.Context) error {
	d := t.deferred
	if d == nil || d.err != nil || len(d.users) == 0 && len(d.events) == 0 {
		return d.failed()
	}
	ctx = detached(ctx)
	err := t.flushUsers(ctx, d.users)
	if err == nil {
		err = t.flushEvents(ctx, d.events)
	}
	clear(d.users)
	clear(d.events)
	d.users, d.events = d.users[:0], d.events[:0]
	if err != nil {
		t.s.cache.reset()
		d.err = fmt.Errorf("db: write a claim's rows: %w", err)
	}
	return d.err
}

// failed returns the error of an earlier flush, nil when there was none
// (or d is nil: nothing is held back).
func (d *deferredRows) failed() error {
	if d == nil {
		return nil
	}
	return d.err
}

func (t *callsTx) flushUsers(ctx context.Context, args []any) error {
	for len(args) >= wideRows*userRowArgs {
		if _, err := t.stmt(t.s.wst.wideUsers).ExecContext(ctx, args[:wideRows*userRowArgs]...); err != nil {
			return err
		}
		args = args[wideRows*userRowArgs:]
	}
	for len(args) > 0 {
		n := min(len(args)/userRowArgs, maxEventRows)
		if _, err := t.stmt(t.s.wst.upsertUsers[n-1]).ExecContext(ctx, args[:n*userRowArgs]...); err != nil {
			return err
		}
		args = args[n*userRowArgs:]
	}
	return nil
}

func (t *callsTx) flushEvents(ctx context.Context, saved [][]calls.Event) error {
	var rows []*calls.Event
	for _, evs := range saved {
		for i := range evs {
			rows = append(rows, &evs[i])
		}
	}
	for len(rows) > 0 {
		n := min(len(rows), maxEventRows)
		if len(rows) >= wideRows {
			n = wideRows
		}
		if err := t.insertEventRows(ctx, rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}
