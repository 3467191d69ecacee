package e2e

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/sqlite"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// An operator backs up a running node (callsig backup) and later restores
// it: the restored node serves what the backup held, fires its deadlines,
// and a client that saw events given after the backup is reset rather
// than resumed, while one that saw nothing after it resumes as usual and
// gets the new events under ids past the restore's gap.
func TestBackupAndRestore(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t)
	alice := s1.Client("alice")
	bob := s1.Stream("bob", "", "")
	dave := s1.Stream("dave", "", "")

	kept := alice.Invite(map[string]any{"timeout": 600}, "bob", "dave").CallID
	bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == kept }, 10*time.Second)
	daveLast := dave.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == kept }, 10*time.Second).ID()

	out := filepath.Join(t.TempDir(), "backup.db")
	rep, err := sqlite.Backup(context.Background(), s1.Config.DB, out, time.Now())
	if err != nil {
		t.Fatalf("backup of the running node: %v", err)
	}
	if rep.LastEventID < daveLast {
		t.Fatalf("backup holds events up to %d, dave saw %d before it", rep.LastEventID, daveLast)
	}

	// After the backup: bob sees an invitation the restore will not hold.
	lost := alice.Invite(nil, "bob").CallID
	bobLast := bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second).ID()
	if bobLast <= rep.LastEventID {
		t.Fatalf("bob's invitation after the backup has id %d, the backup's last is %d", bobLast, rep.LastEventID)
	}
	s1.Stop()

	s2 := testkit.Start(t, testkit.WithDB(out))
	alice = s2.Client("alice")
	alice.Get("/calls/" + lost).Want(http.StatusNotFound)
	alice.Get("/calls/" + kept).Want(http.StatusOK)

	// bob holds an id the restored log never gave: reset, then what a new
	// stream gets (the invitation still pending in the backup), then synced.
	bob2 := s2.Stream("bob", "", strconv.FormatInt(bobLast, 10))
	if e := bob2.Next(10 * time.Second); e.Type != "reset" {
		t.Fatalf("bob resumed from %d after the restore: got %v, want reset", bobLast, e)
	}
	if e := bob2.Next(10 * time.Second); e.Type != string(calls.EventReceived) || e.CallID() != kept {
		t.Fatalf("bob after the reset: got %v, want the pending invitation of %s", e, kept)
	}
	wait.For(t, 10*time.Second, "bob's synced event", func() bool { return bob2.Synced() == 1 })

	// dave saw nothing after the backup: he resumes, and the next event
	// comes under an id past the gap.
	dave2 := s2.Stream("dave", "", strconv.FormatInt(daveLast, 10))
	alice.Action(kept, "cancel", map[string]any{"invitees": []string{"dave"}}).Want(http.StatusOK)
	for {
		e := dave2.Next(10 * time.Second)
		if e.Type == "reset" {
			t.Fatalf("dave resumed from %d, before the backup's last %d: got reset", daveLast, rep.LastEventID)
		}
		if e.ID() > daveLast && e.ID() <= rep.LastEventID {
			continue // dave's own events the backup holds
		}
		if e.Type == string(calls.EventUserStateChanged) && e.CallID() == kept {
			// bob's receipt of kept is written after his stream flushed
			// it, so the backup may hold him still inviting: his reset
			// stream delivered it again on the restored node.
			continue
		}
		if e.Type != string(calls.EventCancelled) || e.CallID() != kept || e.ID() <= rep.Mark {
			t.Fatalf("dave after the restore: got %v (id %d), want the cancellation of %s with an id above %d", e, e.ID(), kept, rep.Mark)
		}
		break
	}
}

// A stream opened on a restored node before it has written any event is
// synced at the head, its restore mark's id: resuming from it is resuming
// from an id this node gave, not a reset. (Counting the mark in the gap
// reset every such client at every reconnection until the node's first
// new event, each time replaying its pending invitations.)
func TestRestoredNodeResumesFromItsSyncedID(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t)
	s1.Client("alice").Invite(nil, "bob")
	out := filepath.Join(t.TempDir(), "backup.db")
	rep, err := sqlite.Backup(context.Background(), s1.Config.DB, out, time.Now())
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	s1.Stop()

	s2 := testkit.Start(t, testkit.WithDB(out))
	// carol has nothing pending: her new stream is synced at the head
	// and nothing else is written meanwhile.
	carol := s2.Stream("carol", "", "")
	wait.For(t, 10*time.Second, "carol's synced event", func() bool { return carol.Synced() == 1 })
	synced := carol.LastEventID()
	if id, _ := strconv.ParseInt(synced, 10, 64); id <= rep.Mark {
		t.Fatalf("carol synced at %s, want the head, past the backup's mark %d", synced, rep.Mark)
	}
	carol.Close()

	carol2 := s2.Stream("carol", "", synced)
	if e, ok := carol2.TryNext(time.Second); ok {
		t.Fatalf("carol resumed from the id the restored node synced her at (%s): got %v, want nothing", synced, e)
	}
	call := s2.Client("alice").Invite(nil, "carol").CallID
	if e := carol2.Next(10 * time.Second); e.Type != string(calls.EventReceived) || e.CallID() != call || e.ID() <= rep.Mark {
		t.Fatalf("carol after resuming: got %v (id %d), want the invitation of %s with an id above %d", e, e.ID(), call, rep.Mark)
	}
}

// One backup restored twice: the first restored node runs and is lost,
// and the backup is restored again. The second node's ids pass every id
// the first gave, which lie in its gap: a client holding one is reset,
// even once that user's newest id on the second node is above it.
func TestSameBackupRestoredTwice(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t)
	kept := s1.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	dir := t.TempDir()
	out := filepath.Join(dir, "backup.db")
	if _, err := sqlite.Backup(context.Background(), s1.Config.DB, out, time.Now()); err != nil {
		t.Fatalf("backup: %v", err)
	}
	s1.Stop()
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	first, second := filepath.Join(dir, "first.db"), filepath.Join(dir, "second.db")
	for _, f := range []string{first, second} {
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	s2 := testkit.Start(t, testkit.WithDB(first))
	bob := s2.Stream("bob", "", "")
	lost := s2.Client("alice").Invite(nil, "bob").CallID
	held := bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second).ID()
	bob.Close()
	s2.Stop()

	s3 := testkit.Start(t, testkit.WithDB(second))
	alice := s3.Client("alice")
	for range 3 { // bob's newest id passes the one he holds, were ids given again
		alice.Invite(nil, "bob")
	}
	bob3 := s3.Stream("bob", "", strconv.FormatInt(held, 10))
	if e := bob3.Next(10 * time.Second); e.Type != "reset" {
		t.Fatalf("bob resumed from %d, given by the first restored node, on the second: got %v, want reset", held, e)
	}
	alice.Get("/calls/" + lost).Want(http.StatusNotFound)
	alice.Get("/calls/" + kept).Want(http.StatusOK)
}

// An operator restores a cluster's PostgreSQL database from a backup
// (here a copy made with CREATE DATABASE … TEMPLATE: a dump restored into
// a new database gets a new oid as well). The node started on it finds
// the database is not the one it last served and moves the ids on: bob,
// who saw an invitation the backup does not hold, is reset, even once
// the restored node has given him newer events.
func TestPostgresRestoredFromABackup(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t, testkit.WithPostgres())
	kept := s1.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	dsn := s1.Config.DB
	s1.Stop()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	backup := pgtest.NewDatabaseFrom(t, strings.TrimPrefix(u.Path, "/"))

	s2 := testkit.Start(t, testkit.WithDB(dsn))
	bob := s2.Stream("bob", "", "")
	lost := s2.Client("alice").Invite(nil, "bob").CallID
	held := bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second).ID()
	bob.Close()
	s2.Stop()

	s3 := testkit.Start(t, testkit.WithDB(backup))
	alice := s3.Client("alice")
	alice.Get("/calls/" + lost).Want(http.StatusNotFound)
	alice.Get("/calls/" + kept).Want(http.StatusOK)
	for range 3 { // bob's newest id passes the one he holds, were ids given again
		alice.Invite(nil, "bob")
	}
	bob3 := s3.Stream("bob", "", strconv.FormatInt(held, 10))
	if e := bob3.Next(10 * time.Second); e.Type != "reset" {
		t.Fatalf("bob resumed from %d, given after the backup, on the restored database: got %v, want reset", held, e)
	}
}
