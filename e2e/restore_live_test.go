package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// An operator restores the cluster's PostgreSQL database from a backup
// under a running node (the database dropped and created again from the
// backup). Bob's stream stayed open through it and saw an invitation the
// backup does not hold. The node's new sessions find the restore and move
// the ids on; bob's stream must not go on past the restore as if nothing
// happened (he would keep ringing for a call that no longer exists):
// it is reset, or ends so that its client resumes and is reset.
func TestPostgresRestoredUnderALiveStream(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t, testkit.WithPostgres())
	s1.Client("alice").Invite(map[string]any{"timeout": 600}, "bob")
	dsn := s1.Config.DB
	s1.Stop()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	backup := pgtest.NewDatabaseFrom(t, name)
	bu, err := url.Parse(backup)
	if err != nil {
		t.Fatal(err)
	}

	s2 := testkit.Start(t, testkit.WithDB(dsn))
	bob := s2.Stream("bob", "", "")
	alice := s2.Client("alice")
	lost := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second)

	admin, err := pgx.Connect(context.Background(), pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{
		"DROP DATABASE " + name + " WITH (FORCE)",
		"CREATE DATABASE " + name + " TEMPLATE " + strings.TrimPrefix(bu.Path, "/"),
	} {
		if _, err := admin.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// The node's sessions died with the database: a request may fail
	// while the pool replaces them.
	after := inviteOnceServed(t, alice, "bob")
	alice.Get("/calls/" + lost).Want(http.StatusNotFound)

	deadline := time.Now().Add(10 * time.Second)
	for {
		e, ok := bob.TryNext(time.Until(deadline))
		if !ok {
			if bob.Ended() {
				// Its client resumes from its last id, and is reset.
				again := s2.Stream("bob", "", bob.LastEventID())
				if e := again.Next(10 * time.Second); e.Type != "reset" {
					t.Fatalf("bob resumed from %s after his stream ended on the restore: got %v, want reset", bob.LastEventID(), e)
				}
				return
			}
			t.Fatalf("bob's stream neither ended nor was reset after the restore")
		}
		if e.Type == "reset" {
			return
		}
		if e.CallID() == after {
			t.Fatalf("bob's live stream, which saw call %s the restored database does not hold, went on past the restore: got %v without a reset", lost, e)
		}
	}
}

// inviteOnceServed invites invitee as c's user once the node serves again,
// and returns the call: after a database is restored under a node, its
// pool's sessions are dead, and requests may fail while the pool replaces
// them.
func inviteOnceServed(t *testing.T, c *testkit.Client, invitee string) string {
	t.Helper()
	var id string
	var last *testkit.Response
	ok := wait.Until(15*time.Second, func() bool {
		last = c.Post("/calls", map[string]any{"invitees": []string{invitee}, "timeout": 600})
		if last.Status != http.StatusCreated {
			return false
		}
		var res calls.InviteResult
		last.JSON(&res)
		id = res.CallID
		return true
	})
	if !ok {
		t.Fatalf("no invitation after the restore: %d %s", last.Status, last.Body)
	}
	return id
}
