package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// The event log's reads are db.EventLog's, run on the read pool outside a
// transaction. On SQLite its statements read these indexes (the plan test
// runs them under EXPLAIN QUERY PLAN):
var (
	// The replay: a range scan of events_by_user.
	sqlEventsAfter = db.EventsAfterSQL
	// The pending and unreceived invitations walk the partial index
	// call_users_invitations backwards from the user's newest invitation
	// (see migration 0002).
	sqlPendingInvitations    = db.PendingInvitationsSQL
	sqlUnreceivedInvitations = db.UnreceivedInvitationsSQL
	// The recipients read a range of the primary key; the distinct users
	// are gathered in a temp b-tree bounded by the range.
	sqlEventRecipients = db.EventRecipientsSQL
	// Pruning deletes one batch from the front of events_by_time.
	sqlPruneEvents = db.PruneEventsSQL
)

// eventLog returns the shared reads of the event log over the read pool.
// They do not check for a closed store: the closed pool answers.
func (s *Store) eventLog() db.EventLog {
	return db.NewEventLog(sqlx.QUESTION,
		func() (sqlx.QueryerContext, error) { return s.rdb, nil },
		func(err error) error { return err })
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
