package postgres

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/db"
	"callsig/internal/pgtest"
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

// Migration 0009 builds its index CONCURRENTLY, outside a transaction:
// while the build waits (here for a transaction holding a snapshot, as a
// long build over a large table would take its time), the nodes of the
// previous version keep writing calls. A plain CREATE INDEX would hold
// every INSERT into calls until it ended.
func TestIndexMigrationLetsWritesThrough(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	raw, err := openPool(ctx, dsn, 3, 10*time.Second, false, "")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	log := slog.New(slog.DiscardHandler)
	if err := db.Migrate(ctx, migrator{raw}, migrationsUpTo(t, 8), log); err != nil {
		t.Fatal(err)
	}
	insert := func(id string) error {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := raw.ExecContext(ictx, `INSERT INTO calls (id, caller, mode, state, timeout, create_time)
			VALUES ($1, 'alice', 'general', 'started', 30, 1)`, id)
		return err
	}
	if err := insert("before"); err != nil {
		t.Fatal(err)
	}

	holder, err := raw.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // committed below
	if _, err := holder.ExecContext(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := holder.GetContext(ctx, &n, `SELECT count(*) FROM calls`); err != nil { // takes the snapshot
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() { done <- migrate(ctx, dsn, 10*time.Second, migrationsUpTo(t, 9), log) }()
	wait.For(t, 10*time.Second, "the index build waiting for the older snapshot", func() bool {
		var waiting int
		if err := raw.GetContext(ctx, &waiting, `SELECT count(*) FROM pg_stat_activity
			WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'`); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
	for _, id := range []string{"during-1", "during-2"} {
		if err := insert(id); err != nil {
			t.Fatalf("a write while the index builds: %v", err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the migration ended (%v) with an older snapshot still open", err)
	default:
	}
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("migrate: %v", err)
	}

	got := indexes(t, raw)
	if !slices.Contains(got, "calls_started") || slices.Contains(got, "calls_started_by_caller") {
		t.Fatalf("valid indexes of calls after 0009: %v; want calls_started, not calls_started_by_caller", got)
	}
	var started int
	if err := raw.GetContext(ctx, &started, `SELECT count(*) FROM calls WHERE state = 'started'`); err != nil || started != 3 {
		t.Fatalf("started calls: %d (%v), want 3", started, err)
	}
	var recorded int
	if err := raw.GetContext(ctx, &recorded, `SELECT count(*) FROM schema_migrations WHERE version = 9`); err != nil || recorded != 1 {
		t.Fatalf("0009 recorded %d times (%v), want once", recorded, err)
	}
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

	// As if a run had built calls_started and died before recording 0009.
	if _, err := raw.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = 9`); err != nil {
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
	if got := statements(script); !slices.Equal(got, want) {
		t.Fatalf("statements:\n%q\nwant\n%q", got, want)
	}
}
