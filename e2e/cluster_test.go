package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// listenOn opens user's stream on node i of a cluster. Its reconnects go
// through the balancer, so they land on other nodes.
func listenOn(t *testing.T, s *testkit.Server, i int, user string) *listener {
	t.Helper()
	return &listener{t: t, s: s, user: user, Stream: s.StreamOn(i, user, "")}
}

// The story of the issue: the invitation is sent on node B while the
// invitee's stream is on node A, the invitee accepts on node C, and the
// caller, whose stream is on node A too, then moves to node C and resumes
// there. Every event arrives once, in order, wherever it was committed.
func TestClusterCallAcrossNodes(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster))
	const a, b, c = 0, 1, 2
	bob := listenOn(t, s, a, "bob")
	alice := listenOn(t, s, a, "alice")

	id := s.Client("alice").OnNode(b).Invite(map[string]any{"timeout": 30}, "bob").CallID
	bob.expect(ev(calls.EventReceived, id), changed(id, "bob=received"))
	alice.expect(ev(calls.EventCreated, id), changed(id, "bob=received"))

	s.Client("bob").OnNode(c).Action(id, "accept", nil).Want(http.StatusOK)
	alice.expect(changed(id, "bob=accepted"))
	bob.expect(changed(id, "bob=accepted"))

	// The caller's stream moves to node C and resumes from its last id.
	alice.drop()
	alice.Stream = s.OpenStream(testkit.StreamOptions{User: "alice", LastEventID: alice.Stream.LastEventID(), Node: ptr(c)})
	marker := s.Client("zed").OnNode(b).Invite(nil, "alice", "bob").CallID
	alice.expect(ev(calls.EventReceived, marker))
	bob.expect(ev(calls.EventReceived, marker))
	alice.seenExactlyTheLog()
	bob.seenExactlyTheLog()
}

func ptr[T any](v T) *T { return &v }

// Deadlines fire exactly once across the cluster: invitations are made on
// every node, so every node's scheduler knows some of them, and each
// invitee's timeout is written once. One node is stopped before they fall
// due: the others fire its deadlines too.
func TestClusterDeadlinesFireOnce(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster))
	const n = 60
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			caller := s.Client(fmt.Sprintf("caller%d", i)).OnNode(i % 3)
			ids[i] = caller.Invite(map[string]any{"timeout": 1}, fmt.Sprintf("callee%d", i)).CallID
		}()
	}
	wg.Wait()
	s.StopNode(1)

	for i, id := range ids {
		wait.For(t, 10*time.Second, "call "+id+" timed out", func() bool {
			c, err := s.App.Store.Call(context.Background(), id)
			return err == nil && c.State == calls.CallEnded
		})
		timeouts := 0
		for _, e := range s.Log(fmt.Sprintf("callee%d", i)) {
			if e.CallID == id && e.Type == calls.EventTimeout {
				timeouts++
			}
		}
		if timeouts != 1 {
			t.Errorf("call %s (made on node %d): %d timeout events, want 1", id, i%3, timeouts)
		}
	}
}

// The same Idempotency-Key sent to two nodes at once runs once: both
// answers name one call, and the caller has exactly one.
func TestClusterIdempotencyAcrossNodes(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster))
	for round := range 5 {
		key := fmt.Sprintf("cluster-key-%d", round)
		caller := fmt.Sprintf("alice%d", round)
		got := make([]string, 3)
		var wg sync.WaitGroup
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := s.Client(caller).OnNode(i)
				c.Header.Set("Idempotency-Key", key)
				got[i] = c.Invite(nil, "bob").CallID
			}()
		}
		wg.Wait()
		if got[0] != got[1] || got[1] != got[2] {
			t.Fatalf("round %d: one key made calls %v", round, got)
		}
		var list struct {
			CallList []struct{ CallID string } `json:"callList"`
		}
		s.Client(caller).Get("/calls").Want(http.StatusOK).JSON(&list)
		if len(list.CallList) != 1 {
			t.Fatalf("round %d: %s has %d calls, want 1", round, caller, len(list.CallList))
		}
	}
}

// Each webhook attempt is made by exactly one node: events committed on
// every node reach a real receiver once each.
func TestClusterWebhooksOnce(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster))
	rcv := s.NewReceiver()
	s.RegisterWebhook(rcv, "call.created")

	const n = 30
	for i := range n {
		s.Client(fmt.Sprintf("caller%d", i)).OnNode(i%3).Invite(nil, "bob")
	}
	rcv.WaitType("call.created", n, nil)
	// A marker made after them, delivered too: by then a duplicate of the
	// first ones would have been sent as well.
	s.Client("marker").Invite(nil, "bob")
	rcv.WaitType("call.created", n+1, nil)
	seen := map[string]int{}
	for _, d := range rcv.Deliveries() {
		seen[d.ID]++
	}
	if len(seen) != n+1 {
		t.Errorf("%d distinct messages delivered, want %d", len(seen), n+1)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("message %s delivered %d times", id, k)
		}
	}
}

// Each node says who it is: /readyz names the node and the backend, and
// /metrics exports callsig_node_info with them.
func TestNodeIdentity(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
		want := "sqlite"
		if s.Backend != testkit.SQLite {
			want = "postgres"
		}
		for i, u := range s.Nodes() {
			res, err := http.Get(u + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]string
			_ = json.NewDecoder(res.Body).Decode(&body)
			res.Body.Close()
			node := s.NodeApp(i).Config.NodeID
			if body["status"] != "ok" || body["node"] != node || body["backend"] != want {
				t.Errorf("node %d /readyz: %v, want node %s on %s", i, body, node, want)
			}
			if v, ok := nodeMetric(t, u, `callsig_node_info{backend="`+want+`",node="`+node+`"}`); !ok || v != 1 {
				t.Errorf("node %d: callsig_node_info for %s/%s: %v %v", i, node, want, v, ok)
			}
		}
	})
}

// A stream counts online on every node from the moment its client sees it
// open: a caller who opens a stream on node A and at once invites through
// node B is tracked by the caller-offline rule (the node records the
// presence before sending the stream's headers, not a moment later).
func TestClusterOnlineAsSoonAsTheStreamOpens(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithBackend(testkit.Cluster))
	for i := range 20 {
		caller := fmt.Sprintf("caller%d", i)
		st := s.StreamOn(0, caller, "")
		id := s.Client(caller).OnNode(1).Invite(nil, "bob").CallID
		if c := loadCall(t, s, id); !c.CallerTracked {
			t.Fatalf("call %d made on node B right after the caller's stream opened on node A: not tracked (caller counted offline)", i)
		}
		st.Close()
	}
}
