package sqlitetopg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/db/postgres"
)

// ErrTargetNotEmpty is returned when the PostgreSQL database already holds
// callsig data: the copy only fills an empty database, it never merges.
var ErrTargetNotEmpty = errors.New("the PostgreSQL database is not empty")

// ErrNodeRunning is returned when a callsig node is serving the target,
// empty as it may be: it armed its callers' graces at its start, over no
// calls, so the calls copied under it would never be watched.
var ErrNodeRunning = errors.New("a callsig node is running on the target")

// Options adjusts Copy.
type Options struct {
	// Now is the instant live idempotency keys are judged against
	// (default: time.Now).
	Now func() time.Time
	// LockTimeout bounds the wait for the target's tables (default 10 s):
	// a node running on the target makes the copy fail instead of hang.
	LockTimeout time.Duration
}

// TableCount is how many rows of one table were copied.
type TableCount struct {
	Table string
	Rows  int64
}

// ColumnCount is how many values of one column were changed.
type ColumnCount struct {
	Table, Column string
	Values        int64
}

// Report says what Copy did.
type Report struct {
	Tables []TableCount // in copy order, event_users last
	// Replaced counts, per column, the text values PostgreSQL cannot hold
	// as they were (a U+0000, which servers before the API refused it
	// stored, or bytes that are not UTF-8): they were copied with U+FFFD
	// in place of each such character (fitText). Empty when none.
	Replaced []ColumnCount
	// Dropped counts, per table, the rows left out because their key is
	// text PostgreSQL cannot hold (an Idempotency-Key that is not UTF-8,
	// which no server since accepts, so no client can replay it).
	Dropped []TableCount
	// LastEventID is where PostgreSQL's event id sequence now stands: the
	// next event gets a larger id.
	LastEventID int64
	// ClockBehind, when the file is a backup never started, is how far the
	// clock was behind the backup's time (db.ClockBehindWarning).
	ClockBehind time.Duration
	Took        time.Duration
}

// ErrCommitUnknown is returned when the copy's COMMIT got no answer from
// PostgreSQL: the copy may be in or not. Running it again tells, safely: a
// copy that went in makes the target not empty, and it is refused.
var ErrCommitUnknown = errors.New("the commit got no answer, so the copy may or may not be in the target")

// Copy copies the SQLite file at from (a stopped node's) into the empty
// PostgreSQL database named by dsn, migrating its schema first
// (postgres.Open), in one transaction. Errors never contain dsn.
func Copy(ctx context.Context, from, dsn string, opts Options) (*Report, error) {
	rep, err := copyAll(ctx, from, dsn, opts)
	return rep, redact(err, dsn)
}

func copyAll(ctx context.Context, from, dsn string, opts Options) (*Report, error) {
	start := time.Now()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 10 * time.Second
	}
	src, err := openSource(ctx, from)
	if err != nil {
		return nil, err
	}
	defer src.release() // after the close below, and after the commit
	defer src.Close()

	// Opening the store applies PostgreSQL's migrations (under their
	// advisory lock); the copy itself then runs on one plain connection.
	store, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := store.Close(); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err) // pgx never repeats the password
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("target %s/%s: %w", cfg.Host, cfg.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Set on the session, not as a startup parameter, which a connection
	// pooler (PgBouncer) refuses or drops (db/postgres, settings.go).
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return nil, fmt.Errorf("target %s/%s: %w", cfg.Host, cfg.Database, err)
	}

	// One snapshot of the file for every table.
	stx, err := src.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("source: begin: %w", err)
	}
	defer stx.Rollback() //nolint:errcheck // read-only
	seqs, err := sequences(ctx, stx)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	if err := lockEmpty(ctx, tx, opts.LockTimeout); err != nil {
		return nil, err
	}
	rep := &Report{}
	now := opts.Now().UnixMilli()
	for _, t := range tables {
		n, fitted, dropped, err := copyTable(ctx, stx, tx, t, now)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", t.name, err)
		}
		rep.Tables = append(rep.Tables, TableCount{Table: t.name, Rows: n})
		if dropped > 0 {
			rep.Dropped = append(rep.Dropped, TableCount{Table: t.name, Rows: dropped})
		}
		for i, c := range t.columns {
			if fitted[i] > 0 {
				rep.Replaced = append(rep.Replaced, ColumnCount{Table: t.name, Column: c.name, Values: fitted[i]})
			}
		}
		if t.identity != "" {
			var seq string
			if err := tx.QueryRow(ctx, `SELECT pg_get_serial_sequence($1, $2)`, t.name, t.identity).Scan(&seq); err != nil {
				return nil, fmt.Errorf("copy %s: its sequence: %w", t.name, err)
			}
			if _, err := moveSequence(ctx, tx, t.name, t.identity, seq, seqs[t.name]); err != nil {
				return nil, fmt.Errorf("copy %s: %w", t.name, err)
			}
		}
	}
	// A backup never started on SQLite gets the restore mark its first
	// start would have written (db.StartRestored), so that the same backup
	// moved twice never gives ids the first cluster gave.
	mark, behind, err := db.StartRestored(ctx, stx, seqs["events"], opts.Now(), func(ctx context.Context, id int64, data string, at int64) error {
		_, err := tx.Exec(ctx, sqlx.Rebind(sqlx.DOLLAR, db.InsertRestoreMarkSQL), id, data, at)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy events: %w", err)
	}
	if mark > 0 {
		seqs["events"] = mark
	}
	rep.ClockBehind = behind
	// Each user's newest id, the row db/postgres's writers update to take
	// the user's next id.
	tag, err := tx.Exec(ctx, `INSERT INTO event_users (user_id, last_id) SELECT user_id, max(id) FROM events GROUP BY user_id`)
	if err != nil {
		return nil, fmt.Errorf("fill event_users: %w", err)
	}
	rep.Tables = append(rep.Tables, TableCount{Table: "event_users", Rows: tag.RowsAffected()})
	if rep.LastEventID, err = moveSequence(ctx, tx, "events", "id", "event_ids", seqs["events"]); err != nil {
		return nil, fmt.Errorf("copy events: %w", err)
	}
	// event_ids' start value records where SQLite's ids end
	// (postgres.Store.MovedEventID): a client may hold one of them above
	// its own user's newest, from an id-only block (SQLite's global head).
	if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER SEQUENCE event_ids START WITH %d", rep.LastEventID+1)); err != nil {
		return nil, fmt.Errorf("copy events: record where SQLite's ids end: %w", err)
	}
	// Everything is read: close the file, then make sure nothing wrote
	// it while it was read.
	if err := stx.Rollback(); err != nil {
		return nil, fmt.Errorf("source: end its read: %w", err)
	}
	if err := src.Close(); err != nil {
		return nil, fmt.Errorf("source: close: %w", err)
	}
	if err := src.unchanged(); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		// PostgreSQL's own refusal rolled everything back; anything else
		// (the connection lost) may have come after the commit.
		if !errors.As(err, new(*pgconn.PgError)) {
			err = fmt.Errorf("%w: %w", ErrCommitUnknown, err)
		}
		return nil, fmt.Errorf("target: commit: %w", err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// lockEmpty keeps the target's tables from every other writer until the
// copy commits, then checks that no node is running on it (noNode) and
// that the tables are empty and no event id was ever given (a database
// used, then pruned, is not empty either: its ids would run backwards).
func lockEmpty(ctx context.Context, tx pgx.Tx, timeout time.Duration) error {
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", timeout.Milliseconds())); err != nil {
		return fmt.Errorf("target: %w", err)
	}
	// nodes and presence too: a node starting meanwhile waits to write its
	// lease until the copy is in, and then arms its callers' graces over
	// the calls copied.
	locked := append(append([]string{}, targetTables...), "nodes", "presence")
	if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(locked, ", ")+" IN EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("target: lock its tables (is a node running on it?): %w", err)
	}
	if err := noNode(ctx, tx); err != nil {
		return err
	}
	parts := make([]string, 0, len(targetTables)+1)
	for _, name := range targetTables {
		parts = append(parts, fmt.Sprintf("SELECT '%[1]s' WHERE EXISTS (SELECT 1 FROM %[1]s)", name))
	}
	parts = append(parts, "SELECT 'event_ids (an event id was given)' FROM event_ids WHERE is_called")
	rows, err := tx.Query(ctx, strings.Join(parts, " UNION ALL "))
	if err != nil {
		return fmt.Errorf("target: check it is empty: %w", err)
	}
	used, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("target: check it is empty: %w", err)
	}
	if len(used) > 0 {
		return fmt.Errorf("%w: %s has rows; copy into a new, empty database", ErrTargetNotEmpty, strings.Join(used, ", "))
	}
	return nil
}

// noNode refuses a target a node is serving: one holding an unexpired
// lease in nodes (db/postgres's presence tables, whose times are the
// database server's clock), or one that left rows in presence, which a
// node deletes as it stops: it crashed, or is stalled past its lease and
// would come back (its next renewal writes its lease again).
func noNode(ctx context.Context, tx pgx.Tx) error {
	const nowMS = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`
	var node string
	var live bool
	err := tx.QueryRow(ctx, `SELECT node_id, live FROM (
			SELECT node_id, true AS live FROM nodes WHERE lease_until > `+nowMS+`
			UNION ALL SELECT node_id, false FROM presence) AS n
		ORDER BY live DESC LIMIT 1`).Scan(&node, &live)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("target: check no node is running on it: %w", err)
	case live:
		return fmt.Errorf("%w (node %s): stop it first", ErrNodeRunning, node)
	default:
		return fmt.Errorf("%w, or crashed (node %s left rows in presence, its lease expired): make sure it is stopped, delete its rows from presence and nodes, then copy again", ErrNodeRunning, node)
	}
}

// copyTable streams t's rows from the SQLite snapshot into PostgreSQL with
// COPY: pgx sends them in chunks as the cursor yields them, so memory stays
// bounded however big the file. COPY writes identity columns as given
// (like INSERT … OVERRIDING SYSTEM VALUE), which keeps every id. It
// returns the rows copied, per column the values fitText changed, and the
// rows left out for an unfit key (table.key).
func copyTable(ctx context.Context, stx *sql.Tx, tx pgx.Tx, t table, now int64) (int64, []int64, int64, error) {
	q := "SELECT " + strings.Join(t.reads(), ", ") + " FROM " + t.name
	var args []any
	if t.where != "" {
		q += " WHERE " + t.where
		args = append(args, now)
	}
	rows, err := stx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("read: %w", err)
	}
	defer rows.Close()
	src := newRowSource(rows, t.columns, t.key)
	n, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.names(), src)
	if err != nil {
		return n, nil, 0, err
	}
	return n, src.fitted, src.dropped, nil
}

// moveSequence moves the sequence seq (a name, as pg_get_serial_sequence
// returns it) to the larger of SQLite's high-water mark and the highest
// copied value of table.col, and returns it (0: nothing to move, the
// sequence is left unused).
//
// setval alone is never rolled back: a copy failing after it (at COMMIT
// itself: a connection cut, the server stopping) would leave event_ids
// moved over empty tables, and every later copy refused as "not empty".
// ALTER SEQUENCE … RESTART is transactional (PostgreSQL 10 and later): it
// gives the sequence new storage that the transaction's rollback drops,
// and the setval that follows writes that new storage, so it goes with
// it. It also blocks every other nextval on seq until the copy ends.
func moveSequence(ctx context.Context, tx pgx.Tx, table, col, seq string, high int64) (int64, error) {
	var top int64
	if err := tx.QueryRow(ctx, fmt.Sprintf("SELECT COALESCE(max(%s), 0) FROM %s", col, table)).Scan(&top); err != nil {
		return 0, fmt.Errorf("highest %s: %w", col, err)
	}
	top = max(top, high)
	if top == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, "ALTER SEQUENCE "+seq+" RESTART"); err != nil {
		return 0, fmt.Errorf("move its sequence: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT setval($1::regclass, $2)", seq, top); err != nil {
		return 0, fmt.Errorf("move its sequence to %d: %w", top, err)
	}
	return top, nil
}
