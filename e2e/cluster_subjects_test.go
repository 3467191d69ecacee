package e2e

import (
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// The cluster tests built with startNodes run in parallel (t.Parallel), on
// the machine's NATS: two of them at once must not hear each other. Each
// cluster's commits reached the other's nodes (the same subject prefix),
// whose streams of the same user ids were woken (a log read) or handed the
// other database's events: TestClusterHandsOverEventsWithoutLogReads
// counts log reads, TestClusterOneNodeLosesPostgres checks that a stream
// had exactly its own log.
func TestClustersStartedTogetherDoNotHearEachOther(t *testing.T) {
	x := startNodes(t, 2, natsURL, testkit.WithEventCatchUp(time.Hour))
	y := startNodes(t, 2, natsURL, testkit.WithEventCatchUp(time.Hour))
	for _, n := range append(append([]*testkit.Server{}, x...), y...) {
		waitNATS(t, n)
	}
	received := func() (n float64) {
		for _, node := range y {
			n += scrapeMetric(t, node, "callsig_cluster_wakeups_received_total")
		}
		return n
	}
	before := received()
	// Only cluster X commits: an invitation from its node B to bob's
	// stream on its node A, which crosses NATS.
	_ = x[1].Stream("alice", "", "")
	bob := x[0].Stream("bob", "", "")
	id := x[1].Client("alice").Invite(nil, "bob").CallID
	bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == id }, 5*time.Second)
	time.Sleep(500 * time.Millisecond) // the rest of X's messages
	if got := received() - before; got != 0 {
		t.Fatalf("cluster Y's nodes received %v NATS messages of cluster X's commits", got)
	}
}
