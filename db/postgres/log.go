package postgres

// The event log's side of Save (what db.SaveLog does on SQLite): events,
// invitations and webhook messages, queued on Save's pipeline.

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

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
	// also records on its invitee's row of its call ($3, by id); the
	// second column counts the rows recorded (1, or 0 for a user not in
	// the call).
	sqlInsertInvitation = insertEvent + `,
		invited AS (
			UPDATE call_users SET invitation_event_id = (SELECT id FROM ev)
			WHERE call_seq = (SELECT seq FROM calls WHERE id = $3) AND user_id = $1
			RETURNING 1)
		SELECT id, (SELECT count(*) FROM invited) FROM ev`

	// sqlSubscribedHooks: for each type of $1, in order, whether an
	// enabled, live endpoint is subscribed to it.
	sqlSubscribedHooks = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE ` + endpointTakesType + `)
		FROM unnest($1::text[]) WITH ORDINALITY AS h(type, ord) ORDER BY ord`
)

// queueEvents queues the inserts of evs on b, in order, each setting its
// event's ID when the pipeline is read.
func queueEvents(b *pgx.Batch, c *calls.Call, evs []calls.Event) error {
	for i := range evs {
		ev := &evs[i]
		data := string(ev.Data)
		if data == "" {
			data = "null"
		}
		if ev.Type != calls.EventReceived {
			b.Queue(sqlInsertEvent, ev.UserID, ev.Device, ev.CallID, string(ev.Type), data, ev.Time).
				QueryRow(func(row pgx.Row) error {
					if err := row.Scan(&ev.ID); err != nil {
						return fmt.Errorf("insert %s event for %s: %w", ev.Type, ev.UserID, err)
					}
					return nil
				})
			continue
		}
		if ev.CallID != c.ID {
			return fmt.Errorf("db: save: %s event for call %s in a change of %s", ev.Type, ev.CallID, c.ID)
		}
		b.Queue(sqlInsertInvitation, ev.UserID, ev.Device, ev.CallID, string(ev.Type), data, ev.Time).
			QueryRow(func(row pgx.Row) error {
				var recorded int
				if err := row.Scan(&ev.ID, &recorded); err != nil {
					return fmt.Errorf("insert invitation of %s to %s: %w", c.ID, ev.UserID, err)
				}
				if recorded != 1 {
					return fmt.Errorf("record invitation %d of %s to %s: %s is not in the call", ev.ID, c.ID, ev.UserID, ev.UserID)
				}
				return nil
			})
	}
	return nil
}

// saveHooks stores the change's webhook messages an endpoint is subscribed
// to, one statement each (sqlInsertHook) in one pipeline, and counts in
// ch.HooksQueued those queued. The message (its id and body) is built only
// for those.
func (t *callsTx) saveHooks(ctx context.Context, ch *calls.Change, subscribed []bool) error {
	ch.HooksQueued = 0
	b := &pgx.Batch{}
	for i := range ch.Hooks {
		if !subscribed[i] {
			continue
		}
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
	if err := t.send(ctx, b); err != nil {
		return fmt.Errorf("db: save %s: %w", ch.Call.ID, err)
	}
	return nil
}

// send runs the deferred locks (deferLocks), then b's statements, on the
// transaction's connection in one round trip (pgx's pipeline, reached
// through database/sql's Conn.Raw: the transaction was begun on that same
// connection, so they run inside it) and reads their results in order
// through their callbacks. The first
// error, of a statement or of a callback, is returned; PostgreSQL skips
// the statements after a failed one.
func (t *callsTx) send(ctx context.Context, b *pgx.Batch) error {
	locks := t.pending
	if len(locks) > 0 {
		first := &pgx.Batch{}
		t.queueLocks(first, locks)
		b.QueuedQueries = append(first.QueuedQueries, b.QueuedQueries...)
		t.pending = nil
	}
	if b.Len() == 0 {
		return nil
	}
	err := t.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("db: a %T is not a pgx connection", dc)
		}
		return c.Conn().SendBatch(ctx, b).Close()
	})
	if err == nil {
		t.markLocked(locks)
	}
	return err
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
