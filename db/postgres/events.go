package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// The event log's reads are db.EventLog's, run on the pool outside a
// transaction; LastEventID and pruning are PostgreSQL's own.

// eventLog returns the shared reads of the event log over the pool.
func (s *Store) eventLog() db.EventLog {
	return db.NewEventLog(sqlx.DOLLAR,
		func() (sqlx.QueryerContext, error) {
			q, err := s.query()
			if err != nil {
				return nil, err
			}
			return q, nil
		},
		s.failed)
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

// MovedEventID returns the last event id SQLite had given when callsig
// migrate filled this database from its file, 0 for a database that was
// never filled so: the event_ids sequence's start value, which the copy
// sets past it. Every id given since is larger.
func (s *Store) MovedEventID(ctx context.Context) (int64, error) {
	q, err := s.query()
	if err != nil {
		return 0, err
	}
	var id int64
	if err := q.QueryRowContext(ctx, `SELECT seqstart - 1 FROM pg_sequence WHERE seqrelid = 'event_ids'::regclass`).Scan(&id); err != nil {
		return 0, s.failed(fmt.Errorf("db: where SQLite's event ids end: %w", err))
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
// transaction, and returns how many it deleted; then it deletes the
// event_users rows of users none of whose events is left (see
// pruneEventUsers).
func (s *Store) PruneEvents(ctx context.Context, before int64) (int64, error) {
	n, err := s.pruneLoop(ctx, "events", sqlx.Rebind(sqlx.DOLLAR, db.PruneEventsSQL), before)
	if err != nil {
		return n, err
	}
	if last := s.usersSwept.Load(); last != 0 && time.Since(time.Unix(0, last)) < s.usersSweepEvery {
		return n, nil
	}
	s.usersSwept.Store(time.Now().UnixNano())
	users, err := s.pruneEventUsers(ctx)
	if users > 0 {
		s.log.Info("pruned the id rows of users with no event left", "deleted", users)
	}
	return n, err
}

// The sweep of event_users (pruneEventUsers).
const (
	sqlEventUsersPage     = `SELECT user_id, last_id FROM event_users WHERE user_id > $1 ORDER BY user_id LIMIT $2`
	sqlLockEventUsersGone = `SELECT user_id FROM event_users WHERE user_id = ANY($1) ORDER BY user_id
		FOR UPDATE SKIP LOCKED`
	sqlDeleteEventUsersGone = `DELETE FROM event_users WHERE user_id = ANY($1) AND ($2::bigint = 0 OR last_id < $2::bigint)`
)

// pruneEventUsers deletes the event_users rows whose user has no event
// left in the log: every user ever invited has one (made-up user ids
// included: a caller inviting nine new ids a request left nine rows that
// outlived every retention), and the busy check makes rows for users it
// only looks at (last_id 0). Such a user is then as one never seen: a new
// stream starts at id 0, and the next event recreates the row with a
// larger id (one sequence for all). It walks the table by user id, a page
// per statement, so it holds nothing for long.
//
// A row may go when its last_id is below the oldest event kept, read
// after the row is locked: a user's ids are taken under that row lock, so
// while the sweep holds it no event of the user is in flight, and last_id
// is the user's newest committed one. (Read before the lock, an event
// committing in between, with an id below the oldest read, would lose its
// row.) Rows a writer holds are skipped until the next sweep.
func (s *Store) pruneEventUsers(ctx context.Context) (int64, error) {
	oldest, err := s.OldestEventID(ctx)
	if err != nil {
		return 0, err
	}
	var total int64
	for cursor := ""; ctx.Err() == nil; {
		q, err := s.query()
		if err != nil {
			return total, err
		}
		var page []struct {
			User   string `db:"user_id"`
			LastID int64  `db:"last_id"`
		}
		if err := sqlx.SelectContext(ctx, q, &page, sqlEventUsersPage, cursor, pruneBatch); err != nil {
			return total, s.failed(fmt.Errorf("db: prune event users: %w", err))
		}
		if len(page) == 0 {
			break
		}
		cursor = page[len(page)-1].User
		var gone []string
		for _, r := range page {
			if oldest == 0 || r.LastID < oldest {
				gone = append(gone, r.User)
			}
		}
		if len(gone) > 0 {
			err := s.inTx(ctx, func(tx *sqlx.Tx) error {
				var locked []string
				if err := tx.SelectContext(ctx, &locked, sqlLockEventUsersGone, gone); err != nil || len(locked) == 0 {
					return err
				}
				var now int64
				if err := tx.QueryRowContext(ctx, db.OldestEventIDSQL).Scan(&now); err != nil {
					return err
				}
				res, err := tx.ExecContext(ctx, sqlDeleteEventUsersGone, locked, now)
				if err != nil {
					return err
				}
				n, err := res.RowsAffected()
				total += n
				return err
			})
			if err != nil {
				return total, fmt.Errorf("db: prune event users: %w", err)
			}
		}
		if len(page) < pruneBatch {
			break
		}
	}
	return total, nil
}

// The retention of ended calls: the oldest pruneBatch, their users first
// (call_users refers to calls), locked so that two nodes pruning at once
// take different calls.
const (
	sqlPruneCallUsers = `DELETE FROM call_users WHERE call_seq = ANY($1)`
	sqlPruneCalls     = `DELETE FROM calls WHERE seq = ANY($1)`
	sqlEndedCalls     = `SELECT seq FROM calls WHERE state = 'ended' AND end_time < $1
		ORDER BY end_time, seq LIMIT $2 FOR UPDATE SKIP LOCKED`
)

// PruneCalls deletes the calls that ended before endedBefore (Unix ms),
// with their users, a batch per transaction, and returns how many calls it
// deleted.
func (s *Store) PruneCalls(ctx context.Context, endedBefore int64) (int64, error) {
	return db.InBatches(ctx, "calls", pruneBatch, func() (n int64, err error) {
		err = s.inTx(ctx, func(tx *sqlx.Tx) error {
			var seqs []int64
			if err := tx.SelectContext(ctx, &seqs, sqlEndedCalls, endedBefore, pruneBatch); err != nil || len(seqs) == 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, sqlPruneCallUsers, seqs); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, sqlPruneCalls, seqs)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	})
}

// pruneLoop runs a batched delete until a batch comes back short.
func (s *Store) pruneLoop(ctx context.Context, what, query string, before int64) (int64, error) {
	return db.InBatches(ctx, what, pruneBatch, func() (n int64, err error) {
		err = s.inTx(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, query, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	})
}
