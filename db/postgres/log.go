package postgres

// The event log's side of Save (what db.SaveLog does on SQLite): events,
// invitations and webhook messages, queued with the commit (pipe).

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/webhooks"
)

const (
	// insertEvent gives the recipient's event_users row, which Save took
	// beforehand (queueLocks), the next id of the global sequence and
	// writes the event ($1 user, $2 device, $3 call id, $4 type, $5 data,
	// $6 time) with it, as ev. The row stays locked until commit, so the
	// user's next writer, on any node, takes its id only after this
	// transaction's events are committed: ids follow each user's commit
	// order.
	insertEvent = `WITH next AS (
			UPDATE event_users SET last_id = nextval('event_ids') WHERE user_id = $1
			RETURNING last_id),
		ev AS (
			INSERT INTO events (id, user_id, device, call_id, type, data, time)
			SELECT last_id, $1, $2, $3, $4, $5, $6 FROM next
			RETURNING id)`
	sqlInsertEvent = insertEvent + ` SELECT id FROM ev`
	// sqlInsertInvitation is sqlInsertEvent for an invitation, which it
	// also records on its invitee's row of its call ($3, by id). It fails
	// (callsig_fail) when the invitee is not in the call: it is sent with
	// the commit, too late for a check in Go.
	sqlInsertInvitation = insertEvent + `,
		invited AS (
			UPDATE call_users SET invitation_event_id = (SELECT id FROM ev)
			WHERE call_seq = (SELECT seq FROM calls WHERE id = $3) AND user_id = $1
			RETURNING 1)
		SELECT CASE WHEN EXISTS (SELECT 1 FROM invited) THEN id ELSE ` + sqlFailNotInvitee + ` END FROM ev`
)

// queueEvents queues the inserts of ch's events on b, in order. When the
// pipeline is read, each sets its event's ID and After: the id its
// recipient's row held (read by the row's lock, queueLocks, earlier in the
// pipeline) or this transaction's previous event for the user.
func (t *callsTx) queueEvents(b *pgx.Batch, c *calls.Call, evs []calls.Event) error {
	for i := range evs {
		ev := &evs[i]
		data := string(ev.Data)
		if data == "" {
			data = "null"
		}
		query, what := sqlInsertEvent, fmt.Sprintf("insert %s event for %s", ev.Type, ev.UserID)
		if ev.Type == calls.EventReceived {
			if ev.CallID != c.ID {
				return fmt.Errorf("db: save: %s event for call %s in a change of %s", ev.Type, ev.CallID, c.ID)
			}
			query, what = sqlInsertInvitation, fmt.Sprintf("insert invitation of %s to %s", c.ID, ev.UserID)
		}
		b.Queue(query, ev.UserID, ev.Device, ev.CallID, string(ev.Type), data, ev.Time).
			QueryRow(func(row pgx.Row) error {
				if err := row.Scan(&ev.ID); err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
				ev.After = t.last[ev.UserID]
				t.last[ev.UserID] = ev.ID
				return nil
			})
	}
	return nil
}

// queueHooks queues on b the change's webhook messages, one statement each
// (sqlInsertHook, which stores one only where an endpoint takes its type),
// counting in ch.HooksQueued those stored. Sent with the commit, they cost
// no round trip of their own, so no statement asks beforehand which types
// are taken.
func queueHooks(b *pgx.Batch, ch *calls.Change) error {
	ch.HooksQueued = 0
	for i := range ch.Hooks {
		h := &ch.Hooks[i]
		msg, err := webhooks.NewMessage(*h)
		if err != nil {
			return fmt.Errorf("db: %w", err)
		}
		b.Queue(sqlInsertHook, msg.ID, string(h.Type), h.CallID, msg.Payload, h.Time).
			QueryRow(func(row pgx.Row) error {
				var stored int
				if err := row.Scan(&stored); err != nil {
					return fmt.Errorf("insert %s webhook: %w", h.Type, err)
				}
				if stored > 0 {
					ch.HooksQueued++
				}
				return nil
			})
	}
	return nil
}

// send sends b's statements now, behind the deferred locks (deferLocks)
// and whatever is queued for the transaction (stage), in one round trip,
// and reads their results in order through their callbacks (pipe.flush).
func (t *callsTx) send(ctx context.Context, b *pgx.Batch) error {
	t.stage(b)
	return t.p.flush(ctx)
}

// stage queues b's statements, behind the deferred locks, for the next
// round trip: a later send's, or the commit's.
func (t *callsTx) stage(b *pgx.Batch) {
	if locks := t.pending; len(locks) > 0 {
		t.pending = nil
		first := &pgx.Batch{}
		t.queueLocks(first, locks)
		t.p.queue(first)
	}
	t.p.queue(b)
}

// appendColumn reads a one-column result into *dst, a value a row, for a
// pipelined query's callback.
func appendColumn[T any](dst *[]T) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		for rows.Next() {
			var v T
			if err := rows.Scan(&v); err != nil {
				return err
			}
			*dst = append(*dst, v)
		}
		return rows.Err()
	}
}
