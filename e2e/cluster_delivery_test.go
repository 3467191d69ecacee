package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// natsURL is the development NATS server (see the README's test script).
const natsURL = "nats://127.0.0.1:4222"

// natsPrefix is a NATS subject prefix of a cluster's own: the tests run
// in parallel on the machine's NATS, and clusters on one prefix hear each
// other's commits (the same user ids, woken or handed events of another
// database).
func natsPrefix() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "callsig-e2e-" + hex.EncodeToString(r[:])
}

// startNodes starts n in-process nodes on one fresh PostgreSQL database,
// with NATS at natsURL unless nats is "" (on subjects of their own), and
// the other options.
func startNodes(t *testing.T, n int, nats string, opts ...testkit.Option) []*testkit.Server {
	t.Helper()
	dsn := pgtest.NewDatabase(t) // dropped after the nodes stop (cleanups run last first)
	prefix := natsPrefix()
	nodes := make([]*testkit.Server, n)
	for i := range nodes {
		id := fmt.Sprintf("node%c", 'a'+i)
		o := append([]testkit.Option{testkit.WithDB(dsn), testkit.WithConfig(func(c *app.Config) {
			c.NATSURL, c.NodeID, c.NATSPrefix = nats, id, prefix
		})}, opts...)
		nodes[i] = testkit.Start(t, o...)
	}
	return nodes
}

// An invitation sent to node B reaches the invitee's stream on node A,
// the acceptance sent to node C reaches the caller's stream on node A:
// every delivery crosses nodes. The catch-up is lengthened to an hour, so
// only the NATS wake-ups can deliver within the wait.
func TestClusterDeliveryAcrossNodes(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3, natsURL, testkit.WithEventCatchUp(time.Hour))
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, n := range nodes {
		waitNATS(t, n)
	}
	aliceA := a.Stream("alice", "", "")
	bobA := a.Stream("bob", "", "")

	res := b.Client("alice").Invite(map[string]any{"timeout": 30}, "bob")
	got := bobA.WaitFor(string(calls.EventReceived), nil, 5*time.Second)
	if got.CallID() != res.CallID {
		t.Fatalf("bob on node A got %v, want the invitation to %s", got, res.CallID)
	}
	aliceA.WaitFor(string(calls.EventCreated), nil, 5*time.Second)

	c.Client("bob").Action(res.CallID, "accept", nil).Want(http.StatusOK)
	aliceA.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool {
		return e.CallID() == res.CallID && e.Users()["bob"] == string(calls.StateAccepted)
	}, 5*time.Second)

	if n := scrapeMetric(t, a, "callsig_cluster_wakeups_received_total"); n < 2 {
		t.Errorf("node A received %v wake-ups, want at least 2", n)
	}
	if n := scrapeMetric(t, b, "callsig_cluster_wakeups_published_total"); n < 1 {
		t.Errorf("node B published %v wake-ups, want at least 1", n)
	}
	if n := scrapeMetric(t, a, "callsig_nats_connected"); n != 1 {
		t.Errorf("callsig_nats_connected on A = %v, want 1", n)
	}
}

// Without NATS (PostgreSQL, two nodes on one database) an event committed
// on node B still reaches the stream on node A, through the periodic
// catch-up, which counts it; the node says at startup it runs without
// NATS.
func TestClusterDeliveryWithoutNATS(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	nodes := startNodes(t, 2, "", testkit.WithLogs(logs))
	a, b := nodes[0], nodes[1]
	bobA := a.Stream("bob", "", "")
	res := b.Client("alice").Invite(map[string]any{"timeout": 30}, "bob")
	if got := bobA.WaitFor(string(calls.EventReceived), nil, 5*time.Second); got.CallID() != res.CallID {
		t.Fatalf("bob on node A got %v", got)
	}
	if n := scrapeMetric(t, a, "callsig_sse_catchup_missed_total"); n < 1 {
		t.Errorf("callsig_sse_catchup_missed_total on A = %v, want at least 1", n)
	}
	if !logs.has("PostgreSQL without NATS: single node") {
		t.Errorf("no startup line about running without NATS in %s", logs)
	}
}

// waitNATS waits until node n is connected to NATS.
func waitNATS(t *testing.T, n *testkit.Server) {
	t.Helper()
	wait.For(t, 5*time.Second, "node "+n.Config.NodeID+" connected to NATS at "+natsURL, func() bool {
		return scrapeMetric(t, n, "callsig_nats_connected") == 1
	})
}

// handOverNodes starts two nodes on NATS with the periodic catch-up an
// hour away, so that only hand-overs bring a stream events: bob listens on
// node a, alice (online on node b) acts through node b.
func handOverNodes(t *testing.T) (a, b *testkit.Server, bobA *testkit.Stream, alice *testkit.Client) {
	t.Helper()
	nodes := startNodes(t, 2, natsURL, testkit.WithEventCatchUp(time.Hour))
	a, b = nodes[0], nodes[1]
	for _, n := range nodes {
		waitNATS(t, n)
	}
	_ = b.Stream("alice", "", "") // the caller stays online
	return a, b, a.Stream("bob", "", ""), b.Client("alice")
}

// Events that follow on what a stream already has are handed to it from
// their commit report, even when another node committed them (they travel
// whole over NATS): the stream's node reads no log for them. Each action
// waits for its event, so the reports reach node A in the log's order;
// the catch-up is an hour away, so nothing else reads.
func TestClusterHandsOverEventsWithoutLogReads(t *testing.T) {
	t.Parallel()
	a, _, bobA, alice := handOverNodes(t)
	round := func() {
		id := alice.Invite(map[string]any{"timeout": 30}, "bob").CallID
		bobA.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == id }, 5*time.Second)
		// Node A's own delivery mark, then the cancel from node B.
		bobA.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool {
			return e.CallID() == id && e.Users()["bob"] == string(calls.StateReceived)
		}, 5*time.Second)
		alice.Action(id, "cancel", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusOK)
		bobA.WaitFor(string(calls.EventCancelled), func(e testkit.Event) bool { return e.CallID() == id }, 5*time.Second)
	}
	round() // bob's first event has no predecessor: read from the log
	metric := func(name string) float64 {
		v, ok := nodeMetric(t, a.URL, name)
		if !ok {
			t.Fatalf("node A exports no %s", name)
		}
		return v
	}
	reads, handed := metric("callsig_sse_log_reads_total"), metric("callsig_sse_events_handed_over_total")
	const rounds = 4
	for range rounds {
		round()
	}
	if got := metric("callsig_sse_log_reads_total") - reads; got != 0 {
		t.Errorf("node A read the log %v times for events that followed on, want 0", got)
	}
	// At least the invitation (node B), the received state (node A) and
	// the cancellation (node B) of each round.
	if got := metric("callsig_sse_events_handed_over_total") - handed; got < 3*rounds {
		t.Errorf("node A handed over %v events, want at least %d", got, 3*rounds)
	}
}

// One event id is one data line, whichever way it reaches a stream: an
// invitation with markup in its extendedData, committed on node B and
// handed over to bob's stream on node A (no log read there), has the bytes
// a stream on node B resuming before it reads from the log. The hand-over
// re-encoded the data with <, > and & escaped (\u003c), so the same event
// differed by node.
func TestClusterHandedOverEventKeepsItsBytes(t *testing.T) {
	t.Parallel()
	a, b, bobA, alice := handOverNodes(t)
	// Bob's first event has no predecessor (read from the log); what
	// follows on it is handed over.
	first := alice.Invite(map[string]any{"timeout": 30}, "bob").CallID
	bobA.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == first }, 5*time.Second)
	alice.Action(first, "cancel", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusOK)
	before := bobA.WaitFor(string(calls.EventCancelled), func(e testkit.Event) bool { return e.CallID() == first }, 5*time.Second)

	reads, ok := nodeMetric(t, a.URL, "callsig_sse_log_reads_total")
	if !ok {
		t.Fatal("node A exports no callsig_sse_log_reads_total")
	}
	const markup = "<b>Tom & Jerry</b> — Zoë"
	id := alice.Invite(map[string]any{"timeout": 30, "extendedData": markup}, "bob").CallID
	live := bobA.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == id }, 5*time.Second)
	if now, _ := nodeMetric(t, a.URL, "callsig_sse_log_reads_total"); now != reads {
		t.Fatalf("node A read the log for the invitation (%v reads, was %v): not a hand-over", now, reads)
	}
	fromLog := b.Stream("bob", "", strconv.FormatInt(before.ID(), 10)).
		WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == id }, 5*time.Second)
	if live.ID() != fromLog.ID() || live.Data != fromLog.Data {
		t.Fatalf("event %d differs by node:\n handed over: %s\n from log:    %s", live.ID(), live.Data, fromLog.Data)
	}
	if !strings.Contains(live.Data, markup) {
		t.Errorf("event data %s does not carry %q as sent", live.Data, markup)
	}
}
