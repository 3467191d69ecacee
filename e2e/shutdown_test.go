package e2e

import (
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// A graceful stop ends every stream at once (so clients go and resume
// elsewhere) instead of waiting for them, and the clients then resume on
// the restarted server with their Last-Event-ID.
func TestShutdownEndsStreams(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	var ls []*listener
	for _, u := range []string{"alice", "bob", "carol"} {
		ls = append(ls, listen(t, s, u, ""), listen(t, s, u, "phone"))
	}
	c1 := s.Client("alice").Invite(nil, "bob", "carol").CallID

	start := time.Now()
	s.Restart()
	for _, l := range ls {
		l.WaitEnded(eventWait)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("restart with open streams took %v", d)
	}
	for _, l := range ls {
		l.reconnect()
	}
	// Whether read before the stop or replayed after, each event once.
	for _, l := range ls {
		first := ev(calls.EventReceived, c1)
		if l.user == "alice" {
			first = ev(calls.EventCreated, c1)
		}
		l.expect(first)
	}
	marker := s.Client("zed").Invite(nil, "alice", "bob", "carol").CallID
	for _, l := range ls {
		l.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == marker }, eventWait)
	}
}
