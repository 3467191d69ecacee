package postgres

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
)

// TestMigrations0005And0006BackfillPresence upgrades a database a server
// before 0005 left, with started calls in every case calls.PresenceMatters
// tells apart (0006: a call only an uninvited joiner accepted), and checks
// that the backfills mark exactly the calls the pure predicate picks: those are what presence reads after the upgrade (a
// call left unmarked would never follow the caller-offline rule).
func TestMigrations0005And0006BackfillPresence(t *testing.T) {
	ctx := context.Background()
	dsn, raw := schemaBefore(t, 5)
	// storetest.PresenceFixture, as SQLite's test writes it.
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time, caller_tracked, caller_offline_at) VALUES
			('tracked-pending', 'alice', 'advanced', 'started', 600, 1000, 0, true, 0),
			('untracked-pending', 'alice', 'advanced', 'started', 600, 1000, 0, false, 0),
			('dormant', 'alice', 'advanced', 'started', 600, 1000, 0, false, 0),
			('accepted', 'alice', 'advanced', 'started', 600, 1000, 0, true, 0),
			('armed', 'alice', 'advanced', 'started', 600, 1000, 0, true, 9000),
			('ended', 'alice', 'general', 'ended', 600, 1000, 2000, true, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, accept_time, timeout_at)
			SELECT c.seq, v.user_id, v.ord, v.state, v.accept_time, v.timeout_at
			FROM (VALUES
				('tracked-pending', 'alice', 0, 'accepted', 1000, 0), ('tracked-pending', 'bob', 1, 'inviting', 0, 601000),
				('untracked-pending', 'alice', 0, 'accepted', 1000, 0), ('untracked-pending', 'bob', 1, 'received', 0, 601000),
				('dormant', 'alice', 0, 'accepted', 1000, 0), ('dormant', 'bob', 1, 'timeout', 0, 0),
				('accepted', 'alice', 0, 'accepted', 1000, 0), ('accepted', 'bob', 1, 'accepted', 1500, 0),
				('armed', 'alice', 0, 'accepted', 1000, 0), ('armed', 'bob', 1, 'timeout', 0, 0),
				('ended', 'alice', 0, 'accepted', 1000, 0), ('ended', 'bob', 1, 'inviting', 0, 0)
			) AS v (call_id, user_id, ord, state, accept_time, timeout_at)
			JOIN calls c ON c.id = v.call_id`,
		// Tracked, bob timed out, dave joined uninvited (0006: no invitee).
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time, caller_tracked, caller_offline_at) VALUES
			('joined', 'alice', 'advanced', 'started', 600, 1000, 0, true, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, inviter, accept_time, timeout_at)
			SELECT c.seq, v.user_id, v.ord, v.state, v.inviter, v.accept_time, v.timeout_at
			FROM (VALUES ('alice', 0, 'accepted', '', 1000, 0), ('bob', 1, 'timeout', 'alice', 0, 0),
				('dave', 2, 'accepted', 'dave', 1200, 0)
			) AS v (user_id, ord, state, inviter, accept_time, timeout_at)
			JOIN calls c ON c.id = 'joined'`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	storetest.CheckPresenceBackfill(t, s)
}

// A migration is a script of several statements sent as one query, which
// PostgreSQL answers only once all have run: each within the statement
// timeout, together for longer than a pool session waits for a silent
// server (answerBound). migrate runs it on a session that does not count
// that silence as a dead server; a pool session does, which is what the
// script would have met there.
func TestLongMigrationScriptOutlastsTheAnswerBound(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	const timeout = 500 * time.Millisecond                                                            // answerBound: 2 s
	script := "CREATE TABLE slow_upgrade (id INTEGER);" + strings.Repeat(" SELECT pg_sleep(0.4);", 7) // 2.8 s
	list := []db.Migration{{Version: 1, Name: "0001_slow.sql", SQL: script}}
	if err := migrate(ctx, dsn, timeout, list, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("a 2.8 s script of 0.4 s statements: %v", err)
	}
	pool, err := openPool(ctx, dsn, 1, timeout, true, "")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.GetContext(ctx, &n, `SELECT count(*) FROM schema_migrations WHERE version = 1`); err != nil || n != 1 {
		t.Fatalf("migration 1 recorded %d times (%v), want once", n, err)
	}
	if _, err := pool.ExecContext(ctx, script[strings.Index(script, "SELECT"):]); err == nil {
		t.Fatal("the same statements on a pool session passed: the test shows nothing")
	}
}

// A migration's statements have no time bound (an index built or a column
// filled over a large table takes what it takes: under the store's
// statement timeout such an upgrade failed at every start), but a wait
// for a lock does: one queued behind a long transaction would hold up
// every query queued behind it.
func TestMigrationStatementsOutlastTheStatementTimeout(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	const timeout = 100 * time.Millisecond
	slow := []db.Migration{{Version: 1, Name: "0001_slow.sql", SQL: "CREATE TABLE big (id INTEGER); SELECT pg_sleep(0.5);"}}
	if err := migrate(ctx, dsn, timeout, slow, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("a 0.5-s statement with a %v statement timeout: %v", timeout, err)
	}
	holder, err := openPool(ctx, dsn, 1, time.Minute, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `LOCK TABLE big IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	blocked := append(slow, db.Migration{Version: 2, Name: "0002_alter.sql", SQL: "ALTER TABLE big ADD COLUMN x INTEGER;"})
	start := time.Now()
	err = migrate(ctx, dsn, timeout, blocked, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "lock timeout") || time.Since(start) > 5*time.Second {
		t.Fatalf("a migration behind a held lock: %v after %v, want a lock timeout soon", err, time.Since(start))
	}
}

// schemaBefore makes a database with the migrations numbered below version
// applied, as a server of that time left it, and returns its DSN and a
// pool to fill it (closed when the test ends; close it sooner to open the
// store, which applies the rest).
func schemaBefore(t *testing.T, version int) (string, *sqlx.DB) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	raw, err := openPool(ctx, dsn, 2, 10*time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	all, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	old := slices.DeleteFunc(all, func(m db.Migration) bool { return m.Version >= version })
	if len(old) != version-1 {
		t.Fatalf("migrations before %04d: %d, want %d", version, len(old), version-1)
	}
	log := slog.New(slog.DiscardHandler)
	if err := db.Migrate(ctx, migrator{db: raw, log: log, settings: setSQL([]setting{{"statement_timeout", "10000"}})}, old, log); err != nil {
		t.Fatal(err)
	}
	return dsn, raw
}
