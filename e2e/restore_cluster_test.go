package e2e

import (
	"context"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
)

// The same in a cluster: bob's stream is on node B, the invitations are
// made on node A, and only NATS wakes B (its periodic catch-up slowed
// down). The database is restored from a dump under the running cluster.
// A's new session finds the restore and moves the ids on; B learns of the
// mark as it reads the log for the wake-up, and bob's stream ends rather
// than going on past the restore.
func TestClusterRestoredUnderALiveStream(t *testing.T) {
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (%v): it comes with PostgreSQL; scripts/test installs postgresql-client when it is missing", tool, err)
		}
	}
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster), testkit.WithEventCatchUp(time.Minute))
	dsn := s.Config.DB
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	s.Client("alice").OnNode(0).Invite(map[string]any{"timeout": 600}, "bob")
	dump := filepath.Join(t.TempDir(), "d")
	if out, err := exec.Command("pg_dump", "-Fc", "-f", dump, "-d", dsn).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	bob := s.StreamOn(1, "bob", "")
	lost := s.Client("alice").OnNode(0).Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second)

	admin, err := pgx.Connect(context.Background(), pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	tmp := name + "_restored"
	t.Cleanup(func() { _ = pgtest.Drop(tmp) }) // renamed away unless the test failed first
	if _, err := admin.Exec(context.Background(), "CREATE DATABASE "+tmp); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("pg_restore", "-d", pgtest.DSN(tmp), dump).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for _, q := range []string{"DROP DATABASE " + name + " WITH (FORCE)", "ALTER DATABASE " + tmp + " RENAME TO " + name} {
		if _, err := admin.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	after := inviteOnceServed(t, s.Client("alice").OnNode(0), "bob")
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, ok := bob.TryNext(time.Until(deadline))
		if !ok {
			if !bob.Ended() {
				t.Fatal("bob's stream on node B neither ended nor was reset after the restore")
			}
			return
		}
		if e.Type == "reset" {
			return
		}
		if e.CallID() == after {
			t.Fatalf("bob's stream on node B, which saw call %s the restored database does not hold, went on past the restore: %v", lost, e)
		}
	}
}
