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
// statements instead of 128, and fires 6 to 8 % more deadlines a second
// (BenchmarkFireDeadlines, docs/benchmarks.md). calls.Tx lets Save send
// its writes later, as long as the IDs are set by the time Update
// returns. The rows are written (flush) before the transaction reads
// what they would change, and before the claim returns.
type deferredRows struct {
	users  []any           // sqlUpsertUser's arguments, userRowArgs a row
	events [][]calls.Event // each Save's, in order; flush sets their IDs in place
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
	if d == nil || len(d.users) == 0 && len(d.events) == 0 {
		return nil
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
		return fmt.Errorf("db: write a claim's rows: %w", err)
	}
	return nil
}

func (t *callsTx) flushUsers(ctx context.Context, args []any) error {
	for len(args) >= wideRows*userRowArgs {
		if _, err := t.stmt(t.s.wst.wideUsers).ExecContext(ctx, args[:wideRows*userRowArgs]...); err != nil {
			return err
		}
		args = args[wideRows*userRowArgs:]
	}
	for ; len(args) > 0; args = args[userRowArgs:] {
		if _, err := t.stmt(t.s.wst.upsertUser).ExecContext(ctx, args[:userRowArgs]...); err != nil {
			return err
		}
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
