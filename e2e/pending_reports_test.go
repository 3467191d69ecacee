package e2e

import (
	"fmt"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// A new stream replays the user's pending invitations, received ones
// included (they still ring), but reports as delivered only those still
// inviting or notYetReceived: each report is a write transaction on the
// one SQLite writer, and an opening reported all of its up to 100, so one
// request (a stream, a token of the rate limit) cost up to 100 writes. The
// hub's set of reported ids hid the repeats only until it held 8,192 ids
// (it is then emptied) or the server restarted: users with 100 pending
// invitations each, reopening their streams in turn, kept the writer busy
// with no-op reports (a review: 90 such users, each stream opened once a
// round, made some 3,000 writes a round).
func TestOpeningReportsOnlyUnreceivedInvitations(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	const n = 100 // Options.PendingReplay: what an opening replays at most
	for i := range n {
		s.Client(fmt.Sprintf("friend-%d", i%10)).Invite(map[string]any{"timeout": 600}, "mallory")
	}
	// The first opening delivers them all: mallory is received in each.
	st := s.Stream("mallory", "", "")
	for range n {
		st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool { return e.Users()["mallory"] == string(calls.StateReceived) }, 10*time.Second)
	}
	st.Close()
	// The hub forgets what it reported (a restart, or 8,192 other ids).
	s.Restart()

	before := scrapeMetric(t, s, "callsig_store_writes_total")
	st = s.Stream("mallory", "", "")
	wait.For(t, 10*time.Second, "the opening's synced event", func() bool { return st.Synced() == 1 })
	if got := countType(st.Pending(), calls.EventReceived); got != n {
		t.Fatalf("the opening replayed %d invitations, want %d", got, n)
	}
	// A new invitation, reported after whatever the opening queued.
	marker := s.Client("marker").Invite(nil, "mallory").CallID
	st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool {
		return e.CallID() == marker && e.Users()["mallory"] == string(calls.StateReceived)
	}, 10*time.Second)
	// The marker's invitation and delivery, mallory's presence: a few.
	if writes := scrapeMetric(t, s, "callsig_store_writes_total") - before; writes > 20 {
		t.Fatalf("%v store writes for one opening whose %d invitations were all received, want a few (none reported again)", writes, n)
	}
}

func countType(evs []testkit.Event, typ calls.EventType) int {
	n := 0
	for _, e := range evs {
		if e.Type == string(typ) {
			n++
		}
	}
	return n
}

// The same for a stream resuming from an old Last-Event-ID: its replay
// reported every invitation it held, received or not (a write each), for
// the token or two its bytes are charged.
func TestResumeReportsOnlyUnreceivedInvitations(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	const n = 100
	for i := range n {
		s.Client(fmt.Sprintf("friend-%d", i%10)).Invite(map[string]any{"timeout": 600}, "mallory")
	}
	st := s.Stream("mallory", "", "")
	for range n {
		st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool { return e.Users()["mallory"] == string(calls.StateReceived) }, 10*time.Second)
	}
	st.Close()
	s.Restart()

	before := scrapeMetric(t, s, "callsig_store_writes_total")
	// From before the first invitation: the whole log is replayed.
	first := s.Log("mallory")[0].ID
	st = s.Stream("mallory", "", fmt.Sprint(first-1))
	marker := s.Client("marker").Invite(nil, "mallory").CallID
	replayed := 0
	for {
		e := st.Next(10 * time.Second)
		if e.Type == string(calls.EventReceived) && e.CallID() != marker {
			replayed++
		}
		if e.Type == string(calls.EventUserStateChanged) && e.CallID() == marker && e.Users()["mallory"] == string(calls.StateReceived) {
			break
		}
	}
	if replayed != n {
		t.Fatalf("the resume replayed %d invitations, want %d", replayed, n)
	}
	if writes := scrapeMetric(t, s, "callsig_store_writes_total") - before; writes > 20 {
		t.Fatalf("%v store writes for one resume whose %d invitations were all received, want a few (none reported again)", writes, n)
	}
}
