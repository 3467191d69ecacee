package e2e

import (
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// A client that never reads fills its socket, then its buffer in the hub,
// and is left behind (to catch up from the log or time out). Nobody else
// waits for it: another user's invitations arrive as fast as before, the
// requests that commit events to the stuck user stay fast, and the server
// still shuts down at once.
func TestStuckReaderDelaysNobody(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	s.StuckStream("stuck")
	bob := listen(t, s, "bob", "")
	alice, carol := s.Client("alice"), s.Client("carol")
	alice.SkipSpec = true // thousands of identical answers; the spec is checked elsewhere

	big := map[string]any{"extendedData": strings.Repeat("x", 2048)}
	var worstRequest, worstDelivery time.Duration
	probe := func() {
		t.Helper()
		start := time.Now()
		id := carol.Invite(nil, "bob").CallID
		e := bob.expect(ev(calls.EventReceived, id), changed(id, "bob=received"))[0]
		worstDelivery = max(worstDelivery, e.At.Sub(start))
	}
	lagging, after, i := false, 0, 0
	for ; after < 30; i++ {
		if i == 3000 {
			t.Fatal("the stuck stream never fell behind: is it reading?")
		}
		start := time.Now()
		alice.Invite(big, "stuck")
		worstRequest = max(worstRequest, time.Since(start))
		if i%10 == 0 {
			probe()
		}
		if !lagging && i%20 == 0 {
			lagging = scrapeMetric(t, s, "callsig_sse_subscribers_dropped_total") > 0
		}
		if lagging {
			after++
			probe()
		}
	}
	t.Logf("the stuck stream fell behind within %d invitations; worst invite request %v, worst delivery to bob %v", i-after, worstRequest, worstDelivery)
	if worstDelivery > time.Second || worstRequest > time.Second {
		t.Fatalf("a stuck reader slowed others: request %v, delivery %v", worstRequest, worstDelivery)
	}

	start := time.Now()
	s.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v with a stuck stream", d)
	}
	bob.WaitEnded(eventWait)
}

// A stream that fell behind (its buffer in the hub full while its client
// did not read) loses nothing: once the client reads again, it gets every
// invitation made meanwhile, in order, on the same connection (or, should
// the server have cut it, after resuming with its Last-Event-ID). A hub
// that dropped what did not fit, without making the stream read the log,
// would go on with the next event as if nothing had been missed.
func TestStreamThatFellBehindLosesNothing(t *testing.T) {
	s := testkit.Start(t)
	stuck := s.StuckStream("bob")
	alice := s.Client("alice")
	alice.SkipSpec = true
	big := map[string]any{"extendedData": strings.Repeat("x", 2048)}
	var ids []string
	for i := 0; ; i++ {
		if i == 2000 {
			t.Fatal("the stuck stream never fell behind: is it reading?")
		}
		ids = append(ids, alice.Invite(big, "bob").CallID)
		if i%10 == 0 && scrapeMetric(t, s, "callsig_sse_subscribers_dropped_total") > 0 {
			break
		}
	}
	for range 10 { // and some after it fell behind
		ids = append(ids, alice.Invite(big, "bob").CallID)
	}
	bob := stuck.Unstick(t, "bob")
	for i, id := range ids {
		deadline := time.Now().Add(eventWait)
		for {
			e, ok := bob.TryNext(time.Until(deadline))
			if !ok && bob.Ended() && time.Now().Before(deadline) {
				bob = s.Stream("bob", "", bob.LastEventID()) // cut off: resume
				continue
			}
			if !ok {
				t.Fatalf("invitation %d of %d (%s) never reached bob's stream, which fell behind after %d", i+1, len(ids), id, len(ids)-10)
			}
			if e.Type != string(calls.EventReceived) {
				continue
			}
			if e.CallID() != id {
				t.Fatalf("bob's stream sent invitation %s where %d of %d (%s) was due: one was lost", e.CallID(), i+1, len(ids), id)
			}
			break
		}
	}
}
