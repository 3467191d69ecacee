package postgres

// The event log's side of Save (db.SaveLog): events, invitations and
// webhook messages, each statement one round trip to the server.

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/db"
)

var _ db.HookFilter = (*callsTx)(nil)

const (
	// sqlInsertEvent takes the recipient's event_users row (inserting it
	// for a first event), gives it the next id of the global sequence and
	// writes the event with it, in one round trip. The row stays locked
	// until commit, so the user's next writer, on any node, takes its id
	// only after this transaction's events are committed: ids follow each
	// user's commit order. The SET's nextval is evaluated after the lock is
	// held. The VALUES one is evaluated too, even on conflict, so ids step
	// by two: gaps, which ids may have anyway.
	sqlInsertEvent = `WITH next AS (
			INSERT INTO event_users (user_id, last_id) VALUES ($1, nextval('event_ids'))
			ON CONFLICT (user_id) DO UPDATE SET last_id = nextval('event_ids')
			RETURNING last_id)
		INSERT INTO events (id, user_id, device, call_id, type, data, time)
		SELECT last_id, $1, $2, $3, $4, $5, $6 FROM next
		RETURNING id`
	sqlSetInvitation = `UPDATE call_users SET invitation_event_id = $1 WHERE call_seq = $2 AND user_id = $3`

	// sqlSubscribedHooks: for each type of $1, in order, whether an
	// enabled, live endpoint is subscribed to it.
	sqlSubscribedHooks = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints
			WHERE enabled AND NOT deleted AND (event_types = '' OR strpos(event_types, ',' || h.type || ',') > 0))
		FROM unnest($1::text[]) WITH ORDINALITY AS h(type, ord) ORDER BY ord`
)

// InsertEvent appends ev to the log and sets ev.ID (see sqlInsertEvent):
// one round trip takes the id and writes the event.
func (t *callsTx) InsertEvent(ctx context.Context, ev *calls.Event) error {
	data := string(ev.Data)
	if data == "" {
		data = "null"
	}
	err := t.tx.QueryRowContext(ctx, sqlInsertEvent, ev.UserID, ev.Device, ev.CallID,
		string(ev.Type), data, ev.Time).Scan(&ev.ID)
	if err != nil {
		return fmt.Errorf("db: insert %s event for %s: %w", ev.Type, ev.UserID, err)
	}
	return nil
}

// SetInvitation records ev, an invitation just inserted, on its invitee's
// row, in the same transaction as the event.
func (t *callsTx) SetInvitation(ctx context.Context, c *calls.Call, ev *calls.Event) error {
	if ev.CallID != c.ID {
		return fmt.Errorf("db: save: %s event for call %s in a change of %s", ev.Type, ev.CallID, c.ID)
	}
	res, err := t.tx.ExecContext(ctx, sqlSetInvitation, ev.ID, c.Seq, ev.UserID)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n != 1 {
			err = fmt.Errorf("%s is not in the call", ev.UserID)
		}
	}
	if err != nil {
		return fmt.Errorf("db: record invitation %d of %s to %s: %w", ev.ID, c.ID, ev.UserID, err)
	}
	return nil
}

// SubscribedHooks reports, in one round trip, which of types an enabled,
// live endpoint is subscribed to (see db.HookFilter).
func (t *callsTx) SubscribedHooks(ctx context.Context, types []calls.HookType) ([]bool, error) {
	names := make([]string, len(types))
	for i, ty := range types {
		names[i] = string(ty)
	}
	subscribed := make([]bool, 0, len(types))
	if err := t.tx.SelectContext(ctx, &subscribed, sqlSubscribedHooks, names); err != nil {
		return nil, fmt.Errorf("db: webhook subscribers: %w", err)
	}
	if len(subscribed) != len(types) {
		return nil, fmt.Errorf("db: webhook subscribers: %d answers for %d types", len(subscribed), len(types))
	}
	return subscribed, nil
}
