package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
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
	// Pruning deletes one batch from the front of the ids (see
	// db.PruneEventsSQL).
	sqlPruneEvents = db.PruneEventsSQL
)

// eventLog returns the shared reads of the event log over the read pool,
// each run with its statement prepared by Open (see eventReads). They do
// not check for a closed store up front: the closed statement answers,
// and readFailed makes that db.ErrClosed, and a busy or failing disk
// unavailable, so a stream retries rather than ends.
func (s *Store) eventLog() db.EventLog {
	return db.NewEventLog(sqlx.QUESTION,
		func() (sqlx.QueryerContext, error) { return eventReads{s}, nil },
		s.readFailed).Visible(s.durableEvent.Load)
}

// eventReads runs a query of the event log with its statement prepared on
// the read pool (s.rst.eventLog), and any other query as text. The driver
// parses a query's text on every run: a stream's opening reads (the
// invitations' joins, the replay) spent most of their time parsing
// (BenchmarkStreamOpening: 4 to 6 times faster prepared).
type eventReads struct{ s *Store }

// stmt returns query's prepared statement, nil when there is none.
func (r eventReads) stmt(query string) *sqlx.Stmt {
	if st := r.s.rst.eventLog[query]; st != nil {
		r.s.prepared.Add(1)
		return st
	}
	r.s.unprepared.Add(1)
	return nil
}

func (r eventReads) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := r.stmt(query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return r.s.rdb.QueryContext(ctx, query, args...)
}

func (r eventReads) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	if st := r.stmt(query); st != nil {
		return st.QueryxContext(ctx, args...)
	}
	return r.s.rdb.QueryxContext(ctx, query, args...)
}

func (r eventReads) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	if st := r.stmt(query); st != nil {
		return st.QueryRowxContext(ctx, args...)
	}
	return r.s.rdb.QueryRowxContext(ctx, query, args...)
}

// PendingInvitations is db.EventLog's, returned once every commit it
// could have seen is durable: it reads call state, not only events below
// the durable cap, and what it returns tells a new stream which
// invitations are live (see syncer.go).
func (s *Store) PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error) {
	evs, err := s.EventLog.PendingInvitations(ctx, userID, limit)
	if err != nil {
		return nil, err
	}
	if err := s.durable(ctx); err != nil {
		return nil, err
	}
	return evs, nil
}

// UnreceivedInvitations is db.EventLog's, returned once durable, as
// PendingInvitations.
func (s *Store) UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error) {
	evs, err := s.EventLog.UnreceivedInvitations(ctx, userID, upTo, limit)
	if err != nil {
		return nil, err
	}
	if err := s.durable(ctx); err != nil {
		return nil, err
	}
	return evs, nil
}

// LastEventID returns the highest event ID assigned and durable, 0 before
// the first event: the streams' cap (see syncer.go), so a hub starting
// from it never passes over an event a stream could not read yet. It
// survives pruning, so a Last-Event-ID above it is not one this server
// gave (a stream never sends an id before it is durable).
func (s *Store) LastEventID(context.Context) (int64, error) {
	return s.durableEvent.Load(), nil
}

// readLastEventID reads the highest event ID ever assigned, 0 before the
// first event, from sqlite_sequence (AUTOINCREMENT keeps it there through
// pruning).
func (s *Store) readLastEventID(ctx context.Context) (int64, error) {
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

// PruneEvents deletes the events older than before (Unix ms), in batches
// through the writer, and returns how many it deleted.
func (s *Store) PruneEvents(ctx context.Context, before int64) (int64, error) {
	return db.InBatches(ctx, "events", pruneBatch, func() (n int64, err error) {
		err = s.write(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(detached(ctx), sqlPruneEvents, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	})
}
