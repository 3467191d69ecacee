package sqlitetopg

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/db/sqlite"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// What the copy refuses of its target, and what a failed copy leaves in it.

// A node running on the (empty) target is refused, naming it: it armed
// its callers' graces at its start, over no calls, so a tracked call
// copied under it whose caller is not connected would never be ended
// (a node started after the copy arms it). Nothing is copied.
func TestCopyRefusesTargetANodeIsRunningOn(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	node := testkit.Start(t, testkit.WithDB(dsn))
	node.Client("alice").Get("/calls").Want(http.StatusOK)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var id string
	if err := conn.QueryRow(ctx, `SELECT node_id FROM nodes`).Scan(&id); err != nil {
		t.Fatalf("the running node's lease: %v", err)
	}
	_, err = Copy(ctx, sourceFile(t), dsn, Options{LockTimeout: 2 * time.Second})
	if !errors.Is(err, ErrNodeRunning) || !strings.Contains(err.Error(), "(node "+id+"): stop it first") {
		t.Fatalf("copy under a running node: %v, want ErrNodeRunning naming node %s", err, id)
	}
	if n := count(t, conn, `SELECT count(*) FROM calls`); n != 0 {
		t.Fatalf("the refused copy wrote %d calls", n)
	}
}

// A node that crashed (or is stalled past its lease, and would renew it
// when it wakes) leaves its rows in presence: the target is refused until
// they are gone. An expired lease alone, of a node that held no stream, is
// no obstacle: the first node started sweeps it.
func TestCopyRefusesTargetACrashedNodeLeftPresenceIn(t *testing.T) {
	ctx := context.Background()
	src := sourceFile(t)
	dsn := pgtest.NewDatabase(t)
	conn := openTarget(t, dsn)
	for _, q := range []string{
		`INSERT INTO nodes (node_id, lease_until) VALUES ('gone', 1), ('stalled', 1)`,
		`INSERT INTO presence (node_id, user_id) VALUES ('stalled', 'alice')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Copy(ctx, src, dsn, Options{})
	if !errors.Is(err, ErrNodeRunning) || !strings.Contains(err.Error(), "node stalled left rows in presence") {
		t.Fatalf("copy with a crashed node's presence: %v, want ErrNodeRunning naming node stalled", err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM presence`); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, src, dsn, Options{}); err != nil {
		t.Fatalf("copy once the presence rows are gone (an expired lease left): %v", err)
	}
}

// A copy failing at its very end (at COMMIT: a connection cut, the server
// stopping, Ctrl-C) leaves the target as it found it, sequences included
// (setval alone is never rolled back, and a moved event_ids made every
// later copy "not empty"), so the copy can simply be run again.
func TestCopyFailingAtCommitCanBeRunAgain(t *testing.T) {
	ctx := context.Background()
	src := sourceFile(t)
	dsn := pgtest.NewDatabase(t)
	conn := openTarget(t, dsn)
	// A deferred trigger that fails stands in for any failure at COMMIT.
	for _, q := range []string{
		`CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'commit fails'; END $$`,
		`CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON calls DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Copy(ctx, src, dsn, Options{}); err == nil || !strings.Contains(err.Error(), "commit") {
		t.Fatalf("first copy: %v, want a failed commit", err)
	} else if errors.Is(err, ErrCommitUnknown) {
		t.Fatalf("first copy: %v: PostgreSQL refused the commit, so its outcome is known", err)
	}
	if n := count(t, conn, `SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM events) + (SELECT count(*) FROM event_users)`); n != 0 {
		t.Fatalf("the failed copy left %d rows", n)
	}
	var seq string
	if err := conn.QueryRow(ctx, `SELECT pg_get_serial_sequence('calls', 'seq')`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"event_ids", seq} {
		if n := count(t, conn, `SELECT count(*) FROM `+s+` WHERE is_called OR last_value <> 1`); n != 0 {
			t.Errorf("the failed copy left sequence %s moved", s)
		}
	}
	if _, err := conn.Exec(ctx, `DROP TRIGGER fail_commit ON calls`); err != nil {
		t.Fatal(err)
	}
	rep, err := Copy(ctx, src, dsn, Options{})
	if err != nil {
		t.Fatalf("copy again after the failed one: %v", err)
	}
	if rep.LastEventID != 9 {
		t.Fatalf("last event id %d, want 9", rep.LastEventID)
	}
}

// A node started on the file while the copy waits for the target's lock
// writes what the copy's snapshot does not hold: the copy is refused
// rather than committed without it, and runs once the writer is gone.
func TestCopyRefusesSourceWrittenDuringIt(t *testing.T) {
	ctx := context.Background()
	src := sourceFile(t)
	dsn := pgtest.NewDatabase(t)
	conn := openTarget(t, dsn)
	holder := openTarget(t, dsn)
	lock, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `LOCK TABLE calls IN ROW EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, src, dsn, Options{LockTimeout: 30 * time.Second})
		done <- err
	}()
	wait.For(t, 10*time.Second, "the copy waiting for the target's lock", func() bool {
		return count(t, conn, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'calls'::regclass`) > 0
	})
	raw, err := sql.Open("sqlite", src)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO calls (seq, id, caller, mode, state, timeout, create_time, caller_tracked) VALUES (4, 'c2', 'bob', 'general', 'started', 30, 2000, 1)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, busy) VALUES (4, 'bob', 0, 'accepted', 1)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrSourceChanged) {
		t.Fatalf("copy of a file written while it ran: %v, want ErrSourceChanged", err)
	}
	if n := count(t, conn, `SELECT count(*) FROM calls`); n != 0 {
		t.Fatalf("the refused copy wrote %d calls", n)
	}
	if _, err := Copy(ctx, src, dsn, Options{}); err != nil {
		t.Fatalf("copy again, the writer gone: %v", err)
	}
	if n := count(t, conn, `SELECT count(*) FROM calls`); n != 2 {
		t.Fatalf("the copy took %d calls, want 2 (c1, and c2 written during the first copy)", n)
	}
}

// The file stays taken (sqlite.Lock, as a node takes it) from the copy's
// start until after the target's commit: a node started in between, after
// the last check that nothing wrote the file, fails at once rather than
// writing what the committed copy lacks. A deferred trigger makes the
// commit take seconds here; in practice it is a round trip.
func TestCopyHoldsTheFileUntilItsCommit(t *testing.T) {
	ctx := context.Background()
	src := sourceFile(t)
	dsn := pgtest.NewDatabase(t)
	conn := openTarget(t, dsn)
	for _, q := range []string{
		`CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$`,
		`CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON calls DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, src, dsn, Options{})
		done <- err
	}()
	wait.For(t, 20*time.Second, "the copy's commit under way", func() bool {
		return count(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'`) > 0
	})
	if lock, err := sqlite.Lock(src); !errors.Is(err, sqlite.ErrInUse) {
		if err == nil {
			lock.Close()
		}
		t.Fatalf("a node's lock on the file while the copy commits: %v, want ErrInUse", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("copy: %v", err)
	}
	lock, err := sqlite.Lock(src)
	if err != nil {
		t.Fatalf("the file after the copy: %v", err)
	}
	lock.Close()
}
