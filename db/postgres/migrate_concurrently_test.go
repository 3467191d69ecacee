package postgres

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/internal/pgtest"
	"callsig/internal/testlog"
	"callsig/internal/wait"
)

// migrationsUpTo is PostgreSQL's migrations up to version v.
func migrationsUpTo(t *testing.T, v int) []db.Migration {
	t.Helper()
	all, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(all, func(m db.Migration) bool { return m.Version > v })
}

// indexes lists the valid indexes of calls.
func indexes(t *testing.T, q interface {
	SelectContext(context.Context, any, string, ...any) error
}) []string {
	t.Helper()
	var names []string
	if err := q.SelectContext(context.Background(), &names, `SELECT c.relname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'calls'::regclass AND i.indisvalid ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	return names
}

// upTo8 is a database at schema version 8 and a pool on it.
func upTo8(t *testing.T) (string, *sqlx.DB) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	raw, err := openPool(ctx, dsn, 4, 10*time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if err := db.Migrate(ctx, migrator{db: raw, log: slog.New(slog.DiscardHandler), settings: setSQL([]setting{{"statement_timeout", "10000"}})}, migrationsUpTo(t, 8), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return dsn, raw
}

// insertCall writes a started call, bounded to 2 s.
func insertCall(q sqlx.ExecerContext, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := q.ExecContext(ctx, `INSERT INTO calls (id, caller, mode, state, timeout, create_time)
		VALUES ($1, 'alice', 'general', 'started', 30, 1)`, id)
	return err
}

// holdAWrite begins a transaction that has written a call and stays open:
// an index build waits for it (the one of a node running the previous
// version, mid-request), concurrently or not.
func holdAWrite(t *testing.T, raw *sqlx.DB) *sqlx.Tx {
	t.Helper()
	holder, err := raw.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Rollback() })
	if err := insertCall(holder, "held"); err != nil {
		t.Fatal(err)
	}
	return holder
}

// waitForLockWait waits until a session other than raw's runs a query
// LIKE pattern and waits on a lock.
func waitForLockWait(t *testing.T, raw *sqlx.DB, what, pattern string) {
	t.Helper()
	wait.For(t, 10*time.Second, what, func() bool {
		var waiting int
		if err := raw.GetContext(context.Background(), &waiting, `SELECT count(*) FROM pg_stat_activity
			WHERE query LIKE $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`, pattern); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
}

// buildBehindAWrite migrates a database at version 8 to 9 while a write
// is held open (holdAWrite), and returns once 0009's index build waits
// for it: the pool, the write, and where migrate's outcome comes.
func buildBehindAWrite(t *testing.T) (*sqlx.DB, *sqlx.Tx, <-chan error) {
	t.Helper()
	dsn, raw := upTo8(t)
	holder := holdAWrite(t, raw)
	done := make(chan error, 1)
	go func() {
		done <- migrate(context.Background(), dsn, 10*time.Second, migrationsUpTo(t, 9), slog.New(slog.DiscardHandler))
	}()
	waitForLockWait(t, raw, "the index build waiting on a lock", "%CREATE INDEX%")
	return raw, holder, done
}

// check0009 checks what 0009 leaves: calls_started valid, the index by
// caller gone, the version recorded once.
func check0009(t *testing.T, raw *sqlx.DB) {
	t.Helper()
	got := indexes(t, raw)
	if !slices.Contains(got, "calls_started") || slices.Contains(got, "calls_started_by_caller") {
		t.Fatalf("valid indexes of calls after 0009: %v; want calls_started, not calls_started_by_caller", got)
	}
	var recorded int
	if err := raw.GetContext(context.Background(), &recorded, `SELECT count(*) FROM schema_migrations WHERE version = 9`); err != nil || recorded != 1 {
		t.Fatalf("0009 recorded %d times (%v), want once", recorded, err)
	}
}

// Migration 0009 builds its index CONCURRENTLY, outside a transaction:
// while the build waits for a write still open (a node of the previous
// version mid-request; over a large table the build itself takes long),
// that version's nodes keep writing calls. A plain CREATE INDEX would
// queue its lock behind that write, and every later write behind it.
func TestIndexMigrationLetsWritesThrough(t *testing.T) {
	ctx := context.Background()
	raw, holder, done := buildBehindAWrite(t)
	for _, id := range []string{"during-1", "during-2"} {
		if err := insertCall(raw, id); err != nil {
			t.Fatalf("a write while the index builds: %v", err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the migration ended (%v) with a write still open", err)
	default:
	}
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrate: %v", err)
	}
	check0009(t, raw)
	var started int
	if err := raw.GetContext(ctx, &started, `SELECT count(*) FROM calls WHERE state = 'started'`); err != nil || started != 3 {
		t.Fatalf("started calls: %d (%v), want 3", started, err)
	}
}

// A node of a version before 0009 that starts while the index builds
// waits for the migration lock inside a transaction (pg_advisory_xact_lock),
// holding a snapshot the build waits for in turn. PostgreSQL breaks the
// deadlock by failing one of them; when it fails the build, the build
// runs again once the lock is free, and the new node starts.
func TestIndexMigrationOutlivesAnOlderNodeStarting(t *testing.T) {
	ctx := context.Background()
	raw, holder, done := buildBehindAWrite(t)

	// The older node's start, as its migrator ran it.
	old, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	// Its deadlock check runs (and finds none) before the cycle closes,
	// so it is the build's check that finds it: the build is failed.
	if _, err := old.ExecContext(ctx, `SET deadlock_timeout = '20ms'`); err != nil {
		t.Fatal(err)
	}
	oldDone := make(chan error, 1)
	go func() {
		tx, err := old.BeginTx(ctx, nil)
		if err == nil {
			if _, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err == nil {
				err = tx.Commit()
			} else {
				_ = tx.Rollback()
			}
		}
		oldDone <- err
	}()
	waitForLockWait(t, raw, "the older node waiting for the migration lock", "SELECT pg_advisory_xact_lock%")
	// No event shows that its one deadlock check has run: ten times its
	// timeout.
	time.Sleep(200 * time.Millisecond)
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrate with an older node starting meanwhile: %v", err)
	}
	if err := <-oldDone; err != nil {
		t.Logf("the older node's start: %v", err) // either may be failed
	}
	check0009(t, raw)
}

// Several processes opening a database at once apply each migration
// once, the one run outside a transaction included, and none fails: a
// process waiting for the lock holds no snapshot the index build would
// wait for (with a blocking pg_advisory_lock, PostgreSQL found a deadlock
// and failed one of them). A run that died after building the index but
// before recording its version is run again from its start.
func TestMigrationsAtOnceAndAgain(t *testing.T) {
	// Bounded: a deadlock PostgreSQL does not see would hang them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	log := slog.New(slog.DiscardHandler)
	all := migrationsUpTo(t, 1<<30)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- migrate(ctx, dsn, 10*time.Second, all, log)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a process migrating at once with three others: %v", err)
		}
	}
	raw, err := openPool(ctx, dsn, 1, 10*time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var versions []int
	if err := raw.SelectContext(ctx, &versions, `SELECT version FROM schema_migrations ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(all) || versions[len(versions)-1] != all[len(all)-1].Version {
		t.Fatalf("versions recorded: %v; want each of the %d once", versions, len(all))
	}

	// As if a run had built calls_started and died before recording 0009
	// (so before the migrations after it).
	if _, err := raw.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version >= 9`); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(ctx, `CREATE INDEX IF NOT EXISTS calls_started_by_caller ON calls (caller) WHERE state = 'started'`); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, dsn, 10*time.Second, all, log); err != nil {
		t.Fatalf("0009 run again: %v", err)
	}
	if got := indexes(t, raw); !slices.Contains(got, "calls_started") || slices.Contains(got, "calls_started_by_caller") {
		t.Fatalf("valid indexes of calls after 0009 ran again: %v", got)
	}
}

func TestStatementsOfAMigrationOutsideATransaction(t *testing.T) {
	script := noTransaction + `
-- a comment; with a semicolon
DROP INDEX CONCURRENTLY IF EXISTS a;
CREATE INDEX CONCURRENTLY a
    ON t (x) WHERE y = 'z';

DROP INDEX CONCURRENTLY IF EXISTS b`
	want := []string{
		"DROP INDEX CONCURRENTLY IF EXISTS a;",
		"CREATE INDEX CONCURRENTLY a\n    ON t (x) WHERE y = 'z';",
		"DROP INDEX CONCURRENTLY IF EXISTS b",
	}
	if got, err := statements(script); err != nil || !slices.Equal(got, want) {
		t.Fatalf("statements:\n%q (%v)\nwant\n%q", got, err, want)
	}
	// Sent with the next statement as one query, both would run in a
	// transaction block.
	if got, err := statements("DROP INDEX CONCURRENTLY a; -- old\nCREATE INDEX CONCURRENTLY a ON t (x);\n"); err == nil {
		t.Fatalf("a line with text after its \";\": %q, no error", got)
	}
}

// A process starting while another holds the migration lock (a long
// index build) says in its log that it waits, and migrates once the lock
// is free.
func TestMigrationWaitingForTheLockSaysSo(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	raw, err := openPool(ctx, dsn, 1, 10*time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	other, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- migrate(ctx, dsn, 10*time.Second, migrationsUpTo(t, 1<<30), slog.New(slog.NewTextHandler(logs, nil)))
	}()
	wait.For(t, 10*time.Second, "the log saying the migration waits", func() bool {
		return strings.Contains(logs.String(), "waiting for another process's migration")
	})
	select {
	case err := <-done:
		t.Fatalf("migrated (%v) while another process held the lock", err)
	default:
	}
	if _, err := other.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, int64(migrationLock)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrate once the lock was free: %v", err)
	}
}
