package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

var eventColumnsE = db.Prefixed("e.", db.EventColumns)

// pendingStates is the SQL list of the user states calls.UserState.Pending
// accepts.
var pendingStates = fmt.Sprintf("'%s', '%s', '%s'",
	calls.StateInviting, calls.StateReceived, calls.StateNotYetReceived)

const sqlEventsAfter = `SELECT ` + db.EventColumns + ` FROM events
	WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`

var (
	sqlPendingInvitations = `SELECT ` + eventColumnsE + ` FROM (
		SELECT u.invitation_event_id AS id FROM call_users u JOIN calls c ON c.seq = u.call_seq
		WHERE u.user_id = $1 AND u.timeout_at > 0 AND u.state IN (` + pendingStates + `)
		AND c.state = 'started'
		ORDER BY u.invitation_event_id DESC LIMIT $2) p
		JOIN events e ON e.id = p.id`
	sqlUnreceivedInvitations = `SELECT ` + eventColumnsE + ` FROM (
		SELECT u.invitation_event_id AS id, u.state AS state FROM call_users u JOIN calls c ON c.seq = u.call_seq
		WHERE u.user_id = $1 AND u.timeout_at > 0 AND u.invitation_event_id <= $2
		AND c.state = 'started'
		ORDER BY u.invitation_event_id DESC LIMIT $3) p
		JOIN events e ON e.id = p.id
		WHERE p.state IN ('` + string(calls.StateInviting) + `', '` + string(calls.StateNotYetReceived) + `')`
)

// EventsAfter returns up to limit of userID's events with ID > afterID,
// oldest first: the replay of an SSE stream after its Last-Event-ID.
func (s *Store) EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.queryEvents(ctx, sqlEventsAfter, userID, afterID, limit)
}

// PendingInvitations returns, for the newest limit started calls in which
// userID is still pending, the newest callInvitationReceived event
// addressed to it, in id order. limit <= 0 means 100.
func (s *Store) PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := s.queryEvents(ctx, sqlPendingInvitations, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("db: pending invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

// UnreceivedInvitations returns the invitation events, with id <= upTo, of
// userID's live invitations still inviting or notYetReceived, looking at
// the newest limit live invitations up to upTo only, in id order.
func (s *Store) UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := s.queryEvents(ctx, sqlUnreceivedInvitations, userID, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("db: unreceived invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

func sortByID(list []calls.Event) {
	slices.SortFunc(list, func(a, b calls.Event) int { return cmp.Compare(a.ID, b.ID) })
}

// EventRecipients returns the distinct users of the events with ids from
// fromID to toID, at most limit of them; more reports whether there may be
// others. Ids are unique across users (see doc.go), so a range of ids
// names the same events on every node.
func (s *Store) EventRecipients(ctx context.Context, fromID, toID int64, limit int) (users []string, more bool, err error) {
	q, err := s.query()
	if err != nil {
		return nil, false, err
	}
	err = q.SelectContext(ctx, &users, `SELECT DISTINCT user_id FROM events WHERE id BETWEEN $1 AND $2 LIMIT $3`,
		fromID, toID, limit+1)
	if err != nil {
		return nil, false, s.failed(fmt.Errorf("db: recipients of events %d to %d: %w", fromID, toID, err))
	}
	if len(users) > limit {
		return users[:limit], true, nil
	}
	return users, false, nil
}

// OldestEventID returns the smallest event ID still in the log, 0 when the
// log is empty.
func (s *Store) OldestEventID(ctx context.Context) (int64, error) {
	q, err := s.query()
	if err != nil {
		return 0, err
	}
	var id int64
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(min(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, s.failed(fmt.Errorf("db: oldest event: %w", err))
	}
	return id, nil
}

// LastEventID returns the highest event ID ever given out, 0 before the
// first: the sequence's position, which pruning does not move back. It
// may name an id spent by a transaction that rolled back; that is still
// an id this server gave no other event.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	q, err := s.query()
	if err != nil {
		return 0, err
	}
	var id int64
	if err := q.QueryRowContext(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_ids`).Scan(&id); err != nil {
		return 0, s.failed(fmt.Errorf("db: last event: %w", err))
	}
	return id, nil
}

// NewestEventIDs returns the newest event id of each of users who ever got
// an event (event_users.last_id, one primary-key lookup each, in one
// query); users with none are left out (a row with last_id 0 is a user
// locked for a busy check, never given an event). It is the id of a committed event
// (the row is updated in the event's transaction), though pruning may have
// deleted it since. The SSE hub's periodic catch-up asks it which of its
// streams are behind the log.
func (s *Store) NewestEventIDs(ctx context.Context, users []string) (map[string]int64, error) {
	out := make(map[string]int64, len(users))
	if len(users) == 0 {
		return out, nil
	}
	q, err := s.query()
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT user_id, last_id FROM event_users WHERE user_id = ANY($1) AND last_id > 0`, users)
	if err != nil {
		return nil, s.failed(fmt.Errorf("db: newest event ids: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var user string
		var id int64
		if err := rows.Scan(&user, &id); err != nil {
			return nil, s.failed(fmt.Errorf("db: newest event ids: %w", err))
		}
		out[user] = id
	}
	if err := rows.Err(); err != nil {
		return nil, s.failed(fmt.Errorf("db: newest event ids: %w", err))
	}
	return out, nil
}

// pruneBatch bounds each pruning transaction.
const pruneBatch = 1000

// PruneEvents deletes the events older than before (Unix ms), a batch per
// transaction, and returns how many it deleted.
func (s *Store) PruneEvents(ctx context.Context, before int64) (int64, error) {
	return s.pruneLoop(ctx, "events", `DELETE FROM events WHERE id IN (
		SELECT id FROM events WHERE time < $1 ORDER BY time LIMIT $2)`, before)
}

// pruneLoop runs a batched delete until a batch comes back short.
func (s *Store) pruneLoop(ctx context.Context, what, query string, before int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.inTx(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, query, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("db: prune %s: %w", what, err)
		}
		total += n
		if n < pruneBatch || ctx.Err() != nil {
			return total, nil
		}
	}
}

// queryEvents runs a query selecting EventColumns on the pool.
func (s *Store) queryEvents(ctx context.Context, query string, args ...any) ([]calls.Event, error) {
	q, err := s.query()
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.failed(fmt.Errorf("db: query events: %w", err))
	}
	list, err := db.ScanRows(rows, db.ScanEvent)
	if err != nil {
		return nil, s.failed(fmt.Errorf("db: query events: %w", err))
	}
	return list, nil
}
