package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
	"callsig/internal/wait"
)

// TestMain fails the package if any test leaves a goroutine running, the
// writer's above all. Started by a test as another process (holdOpenEnv),
// it holds a database open instead.
func TestMain(m *testing.M) {
	holdOpenIfAsked()
	goleak.VerifyTestMain(m)
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	list, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s, err := Open(context.Background(), path, Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if n := count(t, s, "schema_migrations"); n != len(list) {
			t.Errorf("schema_migrations has %d rows, want %d (one per migration)", n, len(list))
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestMigrationsApplyInVersionOrder(t *testing.T) {
	s := openTest(t)
	// 10_c needs 2_b's table; compared as text, "10_c" would sort first.
	fsys := fstest.MapFS{
		"migrations/1_a.sql":  {Data: []byte("CREATE TABLE t1 (a INTEGER);")},
		"migrations/10_c.sql": {Data: []byte("ALTER TABLE t2 ADD COLUMN c TEXT; INSERT INTO t2 (b, c) VALUES (1, 'x');")},
		"migrations/2_b.sql":  {Data: []byte("CREATE TABLE t2 (b INTEGER);\nCREATE INDEX t2_b ON t2 (b);")},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A fresh schema_migrations: this test's migrations are their own history.
	if _, err := s.wdb.Exec("DROP TABLE schema_migrations"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := migrateFS(context.Background(), s.wdb, log, fsys); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	if n := count(t, s, "t2 WHERE c = 'x'"); n != 1 {
		t.Errorf("t2 rows = %d, want 1 (migrations ran out of order or twice)", n)
	}
	var versions []int
	if err := s.wdb.Select(&versions, "SELECT version FROM schema_migrations ORDER BY applied_at, version"); err != nil {
		t.Fatal(err)
	}
	if len(versions) != 3 || versions[0] != 1 || versions[1] != 2 || versions[2] != 10 {
		t.Errorf("applied versions = %v, want [1 2 10]", versions)
	}

	// A database newer than the program is refused rather than misread.
	older := fstest.MapFS{"migrations/1_a.sql": fsys["migrations/1_a.sql"]}
	err := migrateFS(context.Background(), s.wdb, log, older)
	if err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("migrate with an older program: err = %v, want a 'newer' error", err)
	}
}

func TestPragmas(t *testing.T) {
	s := openTest(t)
	for pragma, want := range map[string]string{
		// FULL's fsync is the syncer's (syncer.go): the connection commits with NORMAL.
		"journal_mode": "wal", "synchronous": "1", "foreign_keys": "1", "busy_timeout": "5000",
	} {
		var got string
		if err := s.wdb.Get(&got, "PRAGMA "+pragma); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("writer %s = %s, want %s", pragma, got, want)
		}
	}
	if s.syncWAL == nil {
		t.Error("FULL: no syncer fsync; want the pipelined one")
	}
	if _, err := s.rdb.Exec("DELETE FROM events"); err == nil {
		t.Error("a write through the read pool succeeded; want query_only to refuse it")
	}

	normal, err := Open(context.Background(), filepath.Join(t.TempDir(), "n.db"), Options{Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	defer normal.Close()
	var got string
	if err := normal.wdb.Get(&got, "PRAGMA synchronous"); err != nil || got != "1" {
		t.Errorf("synchronous with NORMAL = %s (%v), want 1", got, err)
	}
	if normal.syncWAL != nil {
		t.Error("NORMAL: the syncer fsyncs the WAL; want no fsync before answers")
	}
	inline, err := Open(context.Background(), filepath.Join(t.TempDir(), "i.db"), Options{InlineSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inline.Close()
	if err := inline.wdb.Get(&got, "PRAGMA synchronous"); err != nil || got != "2" {
		t.Errorf("synchronous with InlineSync = %s (%v), want 2 (FULL)", got, err)
	}
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), Options{Synchronous: "OFF"}); err == nil {
		t.Error("Open accepted synchronous OFF")
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch := storetest.NewCall("c1", "alice", 1000, "bob")
	storetest.Save(t, s, ch)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(context.Background(), func(calls.Tx) error { return nil }); !errors.Is(err, db.ErrClosed) {
		t.Errorf("Update after Close: err = %v, want db.ErrClosed", err)
	}

	s = openAt(t, path)
	c, err := s.Call(context.Background(), "c1")
	if err != nil {
		t.Fatalf("Call after reopen: %v", err)
	}
	if len(c.Users) != 2 || c.Users[1].UserID != "bob" {
		t.Errorf("users after reopen = %+v", c.Users)
	}
	evs, err := s.EventsAfter(context.Background(), "bob", 0, 10)
	if err != nil || len(evs) != 1 || evs[0].ID != ch.Events[0].ID {
		t.Errorf("events after reopen = %+v (%v), want the one saved with id %d", evs, err, ch.Events[0].ID)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// Ping answers within its context while another process holds the write
// lock (its probe waits out busy_timeout, 5 s), and the Pings made
// meanwhile share that one probe instead of queueing a write each.
func TestPingAnswersInTimeBehindALock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, path)
	ctx := context.Background()
	other, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	before := s.WriterStats().Writes
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			if err := s.Ping(pctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Ping behind the lock: %v, want its deadline", err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Ping answered after %v, want its 100 ms", took)
			}
		}()
	}
	wg.Wait()
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	// The shared probe ends (busy_timeout retries until the lock is
	// gone), and the next Ping probes afresh.
	wait.For(t, 10*time.Second, "a Ping to succeed", func() bool { return s.Ping(ctx) == nil })
	if n := s.WriterStats().Writes - before; n > 2 {
		t.Fatalf("%d writes answered for the Pings, want the shared probe and at most one more", n)
	}
}

// A pruned call is gone from the writer's cache too: a write loading it
// gets ErrCallNotFound, not the deleted call (which a transition would
// then save over rows that no longer exist).
func TestPruneCallsEmptiesTheCache(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	ch := storetest.NewCall("old-call", "alice", 10, "bob")
	ch.Call.State, ch.Call.EndTime = calls.CallEnded, 100
	storetest.Save(t, s, ch) // the writer caches the call it saved
	if n, err := s.PruneCalls(ctx, 500); err != nil || n != 1 {
		t.Fatalf("PruneCalls = %d, %v; want 1", n, err)
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		_, err := tx.Call(ctx, "old-call")
		return err
	})
	if !errors.Is(err, calls.ErrCallNotFound) {
		t.Fatalf("loading the pruned call in a write: %v, want ErrCallNotFound", err)
	}
}
