package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// sqlEventsAfter is a stream's replay: a range scan of events_by_user.
const sqlEventsAfter = `SELECT ` + eventColumns + ` FROM events
	WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`

// EventsAfter returns up to limit of userID's events with ID > afterID,
// oldest first: the replay of an SSE stream after its Last-Event-ID. Events
// addressed to one device are included; the stream filters by device.
func (s *Store) EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	return queryEvents(ctx, s.rdb, sqlEventsAfter, userID, afterID, limit)
}

// sqlPendingInvitations selects the newest invitation events of a user's
// live invitations (at most a limit of them). It walks the partial index
// call_users_invitations backwards from the user's newest invitation: one
// index step, one call row and one event row per invitation returned,
// whatever the length of the user's history (see migration 0002). The
// literal u.timeout_at > 0 is what lets SQLite use that partial index.
var sqlPendingInvitations = `SELECT ` + eventColumnsE + ` FROM (
	SELECT u.invitation_event_id AS id FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = ? AND u.timeout_at > 0 AND u.state IN (` + pendingStates + `)
	AND c.state = 'started'
	ORDER BY u.invitation_event_id DESC LIMIT ?) p
	JOIN events e ON e.id = p.id`

// sqlUnreceivedInvitations is sqlPendingInvitations for the live
// invitations with an event id up to a bound, among which those whose
// invitee is still inviting or notYetReceived are returned. Only the newest
// limit below the bound are looked at, so the read is bounded whatever the
// number of invitations the user has.
var sqlUnreceivedInvitations = `SELECT ` + eventColumnsE + ` FROM (
	SELECT u.invitation_event_id AS id, u.state AS state FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = ? AND u.timeout_at > 0 AND u.invitation_event_id <= ?
	AND c.state = 'started'
	ORDER BY u.invitation_event_id DESC LIMIT ?) p
	JOIN events e ON e.id = p.id
	WHERE p.state IN ('` + string(calls.StateInviting) + `', '` + string(calls.StateNotYetReceived) + `')`

// eventColumnsE is eventColumns qualified for a query joining events as e.
var eventColumnsE = db.Prefixed("e.", eventColumns)

// PendingInvitations returns, for the newest limit started calls in which
// userID is still pending, the newest callInvitationReceived event
// addressed to it, in id order: what a stream opened without Last-Event-ID
// replays so an invitee that was offline still sees the invitations it can
// answer. limit <= 0 means 100.
func (s *Store) PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := queryEvents(ctx, s.rdb, sqlPendingInvitations, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("db: pending invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

// UnreceivedInvitations returns the invitation events, with id <= upTo, of
// userID's invitations that are still pending in state inviting or
// notYetReceived, looking at the newest limit live invitations up to upTo
// only, in id order. A client that resumes after upTo has had those events:
// the SSE layer reports them delivered again (calls.Service.MarkDelivered is
// idempotent), so a report lost to a crash or a failed write is re-derived
// from the log and the client's own Last-Event-ID. limit <= 0 means 100.
func (s *Store) UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := queryEvents(ctx, s.rdb, sqlUnreceivedInvitations, userID, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("db: unreceived invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

// sortByID puts events read through an index on another column in id order.
func sortByID(list []calls.Event) {
	slices.SortFunc(list, func(a, b calls.Event) int { return cmp.Compare(a.ID, b.ID) })
}

// sqlEventRecipients reads a range of the primary key; the distinct users
// are gathered in a temp b-tree bounded by the range.
const sqlEventRecipients = `SELECT DISTINCT user_id FROM events WHERE id BETWEEN ? AND ? LIMIT ?`

// EventRecipients returns the distinct users of the events with ids from
// fromID to toID, at most limit of them; more reports whether there may be
// others. The SSE hub reads it when it gives up waiting for ids it was never
// told of: only those users' streams must catch up from the log.
func (s *Store) EventRecipients(ctx context.Context, fromID, toID int64, limit int) (users []string, more bool, err error) {
	err = s.rdb.SelectContext(ctx, &users, sqlEventRecipients, fromID, toID, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("db: recipients of events %d to %d: %w", fromID, toID, err)
	}
	if len(users) > limit {
		return users[:limit], true, nil
	}
	return users, false, nil
}

// OldestEventID returns the smallest event ID still in the log, 0 when the
// log is empty: a Last-Event-ID below it may have missed pruned events.
func (s *Store) OldestEventID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.rdb.QueryRowContext(ctx, `SELECT COALESCE(MIN(id), 0) FROM events`).Scan(&id); err != nil {
		return 0, fmt.Errorf("db: oldest event: %w", err)
	}
	return id, nil
}

// LastEventID returns the highest event ID ever assigned, 0 before the
// first event. It survives pruning (AUTOINCREMENT keeps it in
// sqlite_sequence), so a Last-Event-ID above it is not one this server gave.
func (s *Store) LastEventID(ctx context.Context) (int64, error) {
	var id int64
	err := s.rdb.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'events'`).Scan(&id)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("db: last event: %w", err)
	}
	return id, nil
}

// sqlNewestEventIDs looks each user up with a correlated MAX, which SQLite
// answers with one seek at the end of the user's range of events_by_user,
// whatever the length of the user's history (a GROUP BY would scan it).
const sqlNewestEventIDs = `SELECT u.value, (SELECT MAX(id) FROM events WHERE user_id = u.value)
	FROM json_each(?) u`

// NewestEventIDs returns the id of the newest event kept for each of users;
// users with none are left out. (SQLite's hub passes events on in one
// global order and does not need it; it is here so both backends keep one
// contract.)
func (s *Store) NewestEventIDs(ctx context.Context, users []string) (map[string]int64, error) {
	out := make(map[string]int64, len(users))
	if len(users) == 0 {
		return out, nil
	}
	list, err := json.Marshal(users)
	if err != nil {
		return nil, fmt.Errorf("db: newest event ids: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, sqlNewestEventIDs, string(list))
	if err != nil {
		return nil, fmt.Errorf("db: newest event ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var user string
		var id sql.NullInt64
		if err := rows.Scan(&user, &id); err != nil {
			return nil, fmt.Errorf("db: newest event ids: %w", err)
		}
		if id.Valid {
			out[user] = id.Int64
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: newest event ids: %w", err)
	}
	return out, nil
}

// pruneBatch bounds each pruning transaction, so a large backlog never
// holds the writer (and the requests queued behind it) for long.
const pruneBatch = 1000

// sqlPruneEvents deletes one batch from the front of events_by_time.
const sqlPruneEvents = `DELETE FROM events WHERE id IN (
	SELECT id FROM events WHERE time < ? ORDER BY time LIMIT ?)`

// PruneEvents deletes the events older than before (Unix ms), in batches
// through the writer, and returns how many it deleted.
func (s *Store) PruneEvents(ctx context.Context, before int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.write(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, sqlPruneEvents, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("db: prune events: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// queryEvents runs a query selecting eventColumns.
func queryEvents(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) ([]calls.Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("db: query events: %w", err)
	}
	list, err := db.ScanRows(rows, db.ScanEvent)
	if err != nil {
		return nil, fmt.Errorf("db: query events: %w", err)
	}
	return list, nil
}
