package e2e

import (
	"testing"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// One user cannot hold more than CALLSIG_MAX_STREAMS_PER_USER streams: a
// new one closes the user's oldest, whose client resumes with
// Last-Event-ID and misses nothing; the other streams stay open.
func TestStreamsPerUserCapClosesTheOldest(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.MaxStreamsPerUser = 2 }))
	first := s.Stream("alice", "phone", "")
	second := s.Stream("alice", "laptop", "")
	third := s.Stream("alice", "tab", "") // one too many: the phone's goes

	first.WaitEnded(eventWait)
	if second.Ended() || third.Ended() {
		t.Fatal("a newer stream was closed instead of the oldest")
	}
	wait.For(t, eventWait, "two streams open", func() bool { return scrapeMetric(t, s, "callsig_sse_streams_open") == 2 })

	// Committed while the phone is away: it gets it on resuming.
	callID := s.Client("bob").Invite(nil, "alice").CallID
	isCall := func(e testkit.Event) bool { return e.CallID() == callID }
	second.WaitFor("callInvitationReceived", isCall, eventWait)
	third.WaitFor("callInvitationReceived", isCall, eventWait)

	resumed := s.Stream("alice", "phone", first.LastEventID())
	resumed.WaitFor("callInvitationReceived", isCall, eventWait)
	second.WaitEnded(eventWait) // now the laptop's was the oldest
	if third.Ended() || resumed.Ended() {
		t.Fatal("the two newest streams must stay open")
	}
	// Other users are not affected by alice's cap.
	s.Stream("bob", "", "")
	s.Stream("bob", "", "")
	wait.For(t, eventWait, "four streams open", func() bool { return scrapeMetric(t, s, "callsig_sse_streams_open") == 4 })
}
