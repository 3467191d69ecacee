package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// clusterNode starts one node of a cluster on the shared database dsn,
// with a short lease and heartbeat so a dead node is noticed in seconds.
func clusterNode(t *testing.T, dsn, id string) *testkit.Server {
	t.Helper()
	return testkit.Start(t, testkit.WithDB(dsn), testkit.WithConfig(func(c *app.Config) {
		c.NodeID = id
		c.PresenceLease = time.Second
		c.HeartbeatTimeout = time.Second
	}))
}

// Presence is cluster-wide: a caller with a stream on node A counts as
// online on node B (its call made through B is watched by the
// caller-offline rule, and B says it is online). When node A dies, its
// lease lapses, node B sweeps it, and the caller's call follows the
// caller-offline rule: cancelled for the pending invitee, ended as
// caller_offline.
func TestClusterPresenceFollowsADeadNode(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a := clusterNode(t, dsn, "node-a")
	b := clusterNode(t, dsn, "node-b")

	alice := listen(t, a, "alice", "")
	bob := listen(t, b, "bob", "")
	wait.For(t, eventWait, "node B to see alice online on node A", func() bool {
		return b.App.Presence.Online("alice")
	})
	if b.App.Presence.Online("carol") {
		t.Fatal("node B says carol, who has no stream anywhere, is online")
	}

	c1 := b.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
	if c := loadCall(t, b, c1); !c.CallerTracked || c.CallerOfflineAt != 0 {
		t.Fatalf("a call made through node B by a caller online on node A: tracked %v, offline at %d; want tracked, no grace armed", c.CallerTracked, c.CallerOfflineAt)
	}

	a.Kill()
	alice.drop()
	// Lease (1 s) + one sweep period + grace (1 s): well within eventWait.
	bob.expect(ev(calls.EventCancelled, c1), changed(c1, "bob=cancelled"))
	c := loadCall(t, b, c1)
	if c.State != calls.CallEnded || c.EndReason != calls.EndCallerOffline {
		t.Fatalf("after node A died: call %s (%s), want ended as caller_offline", c.State, c.EndReason)
	}
	if b.App.Presence.Online("alice") {
		t.Fatal("node B still says alice is online after node A was swept")
	}
}

// A caller whose stream moves from node A to node B keeps its call: node
// A's offline report, and its graceful leave, find node B's row and arm no
// caller-offline grace; the leave removes node A's own rows and lease.
func TestClusterPresenceStreamMovesNodes(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	a := clusterNode(t, dsn, "node-a")
	b := clusterNode(t, dsn, "node-b")

	alice := listen(t, a, "alice", "")
	bob := listen(t, b, "bob", "")
	wait.For(t, eventWait, "alice online on node B", func() bool { return b.App.Presence.Online("alice") })
	c1 := b.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

	listen(t, b, "alice", "tab")
	wait.For(t, eventWait, "node B's presence row of alice", func() bool {
		return presenceRows(t, dsn, "node-b", "alice") == 1
	})
	alice.drop()
	a.Stop() // graceful: leaves the cluster before it returns
	if n := presenceRows(t, dsn, "node-a", ""); n != 0 {
		t.Fatalf("node A left %d presence rows behind", n)
	}
	if c := loadCall(t, b, c1); c.State != calls.CallStarted || c.CallerOfflineAt != 0 {
		t.Fatalf("after the caller moved to node B: %s, offline at %d; want started, no grace", c.State, c.CallerOfflineAt)
	}
	// And the lease row went with it.
	if n := countRows(t, dsn, `SELECT count(*) FROM nodes WHERE node_id = 'node-a'`); n != 0 {
		t.Fatalf("node A's lease row is still there")
	}
}

// presenceRows counts node's presence rows (of user, or all with "").
func presenceRows(t *testing.T, dsn, node, user string) int {
	t.Helper()
	return countRows(t, dsn, `SELECT count(*) FROM presence WHERE node_id = $1 AND ($2 = '' OR user_id = $2)`, node, user)
}

func countRows(t *testing.T, dsn, query string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
