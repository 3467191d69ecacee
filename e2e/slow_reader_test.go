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
