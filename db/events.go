package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// EventsAfter returns up to limit of userID's events with ID > afterID,
// oldest first: the replay of an SSE stream after its Last-Event-ID. Events
// addressed to one device are included; the stream filters by device.
func (s *Store) EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	return queryEvents(ctx, s.rdb, `SELECT `+eventColumns+` FROM events
		WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`, userID, afterID, limit)
}

// PendingInvitations returns, for each started call in which userID is
// still pending, the newest callInvitationReceived event addressed to it,
// in id order: what a stream opened without Last-Event-ID replays so an
// invitee that was offline still sees the invitations it can answer.
func (s *Store) PendingInvitations(ctx context.Context, userID string) ([]calls.Event, error) {
	var list []calls.Event
	// The inner lookup walks events_by_user backwards from the newest and
	// stops at the first match; the invitation is recent (at most the
	// invitation timeout old), so that walk is short.
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		list, err = queryEvents(ctx, tx, `SELECT `+eventColumns+` FROM events WHERE id IN (
			SELECT (SELECT e.id FROM events e
				WHERE e.user_id = u.user_id AND e.call_id = c.id AND e.type = ?
				ORDER BY e.id DESC LIMIT 1)
			FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.user_id = ? AND c.state = 'started' AND u.state IN (`+pendingStates+`))
			ORDER BY id`, string(calls.EventReceived), userID)
		return err
	})
	return list, err
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

// pruneBatch bounds each pruning transaction, so a large backlog never
// holds the writer (and the requests queued behind it) for long.
const pruneBatch = 1000

// PruneEvents deletes the events older than before (Unix ms), in batches
// through the writer, and returns how many it deleted.
func (s *Store) PruneEvents(ctx context.Context, before int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.write(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id IN (
				SELECT id FROM events WHERE time < ? ORDER BY time LIMIT ?)`, before, pruneBatch)
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
	defer rows.Close()
	var list []calls.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("db: query events: %w", err)
		}
		list = append(list, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: query events: %w", err)
	}
	return list, nil
}
