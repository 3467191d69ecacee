package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// A receiver that stays down holds at most CALLSIG_WEBHOOK_MAX_PENDING
// pending deliveries: the retention's pass fails the oldest beyond them as
// dropped (listed as failed with the reason, counted, logged once a pass,
// not once a delivery), while the users' calls go on as ever. Back up, the
// receiver gets the newest, each once, and a dropped one only when an
// admin retries it.
func TestWebhookBacklogOfADeadReceiverIsBounded(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		const limit, calls = 5, 12
		logs := &logBuffer{}
		s := testkit.Start(t, backend, testkit.WithFakeClock(), testkit.WithLogs(logs),
			testkit.WithConfig(func(c *app.Config) {
				c.WebhookMaxPending = limit
				// The test moves the clock by hours: a lease outrun by
				// such a move lets another node send a delivery whose
				// attempt is in flight again (at least once, not twice,
				// is what a clock jump leaves).
				c.WebhookLease = 24 * time.Hour
			}))
		rcv := s.NewReceiver()
		// The clock moves by hours below, and an attempt signed before a
		// move may reach the receiver after it: the test cannot see an
		// attempt between its signature and its arrival (a breaker's
		// probe, say, sent just as the loop below reads the breaker open
		// and nothing at the receiver; seen in CI, 6,059 s of skew). The
		// signature is still checked; its freshness is not what this test
		// is about.
		rcv.AllowSkew(48 * time.Hour)
		wh := s.RegisterWebhook(rcv, "call.created")
		rcv.Down()

		// Every call is created (200) with the receiver down, the backlog
		// over its limit or not.
		alice := s.Client("alice")
		var ids []string // oldest first
		for range calls {
			ids = append(ids, alice.Invite(nil, "bob").CallID)
		}
		s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool { return len(l) == calls })

		// The pruner runs every 10 minutes of clock time: step the clock
		// until a pass has cut the backlog.
		reason := webhooks.DroppedReason(limit)
		count := func(l []testkit.WebhookDelivery) (pending, dropped int) {
			for _, d := range l {
				switch {
				case d.Status == "pending":
					pending++
				case d.Status == "failed" && d.LastError == reason:
					dropped++
				}
			}
			return pending, dropped
		}
		wait.For(t, eventWait, "the backlog cut to its limit", func() bool {
			s.Advance(10 * time.Minute)
			p, d := count(s.WebhookDeliveries(wh.ID))
			return p == limit && d == calls-limit
		})
		// Listed newest first: the newest kept, the oldest dropped.
		l := s.WebhookDeliveries(wh.ID)
		for i, d := range l {
			if kept := i < limit; kept != (d.Status == "pending") || !kept && (d.LastError != reason || d.NextAttemptAt != 0) {
				t.Fatalf("delivery %d of %d (newest first): %+v; want the newest %d pending, the rest failed: %q", i, len(l), d, limit, reason)
			}
		}
		// Logged once a pass (a node), not once a delivery.
		failed, lines := 0, 0
		for _, line := range strings.Split(logs.String(), "\n") {
			var m struct {
				Msg    string `json:"msg"`
				Failed int    `json:"failed"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && strings.HasPrefix(m.Msg, "webhook deliveries dropped") {
				failed += m.Failed
				lines++
			}
		}
		// One pass cuts the backlog; a second may, after an attempt held a
		// delivery leased through the first. A cluster's nodes each pass.
		if failed != calls-limit || lines == 0 || s.Backend != testkit.Cluster && lines > 2 {
			t.Fatalf("the drop logged in %d lines for %d deliveries, want %d deliveries in a line a pass", lines, failed, calls-limit)
		}
		if s.Backend != testkit.Cluster { // one node: its counter is the whole count
			if v := scrapeMetric(t, s, "callsig_webhook_deliveries_dropped_total"); v != calls-limit {
				t.Fatalf("callsig_webhook_deliveries_dropped_total = %v, want %d", v, calls-limit)
			}
		}

		// Back up, the receiver gets the kept ones, each once, and none
		// dropped: the clock moves past their retries and the breaker's
		// longest cool-down, and then stands still while any of them may
		// be in flight (the receiver checks each timestamp against it).
		// An attempt made with the receiver still down, written after the
		// deliveries were listed, retries later than the list said, and
		// opens the breaker again from the moved clock: its deliveries
		// are then due but held (seen on a loaded cluster, and reproduced
		// by a review holding such a probe). Either way nothing is in
		// flight, and the clock moves again.
		rcv.Up()
		series := `callsig_webhook_breaker_state{webhook="` + wh.ID + `"}`
		held := func() bool { // every node's breaker open, nothing at the receiver
			for _, u := range s.Nodes() {
				if v, _ := nodeMetric(t, u, series); v != webhooks.BreakerOpen {
					return false
				}
			}
			return rcv.InFlight() == 0
		}
		pending := func() (dueNow int, later int64) {
			now := s.Now()
			for _, d := range s.WebhookDeliveries(wh.ID) {
				switch {
				case d.Status != "pending":
				case d.NextAttemptAt <= now:
					dueNow++
				default:
					later = max(later, d.NextAttemptAt)
				}
			}
			return dueNow, later
		}
		moveClockPast := func(at int64) {
			s.Advance(time.Duration(max(at-s.Now(), 0))*time.Millisecond + 10*time.Minute + time.Second)
		}
		_, later := pending()
		moveClockPast(later)
		wait.For(t, eventWait, "the kept deliveries delivered", func() bool {
			dueNow, later := pending()
			switch {
			case dueNow == 0 && later > 0:
				moveClockPast(later)
			case dueNow > 0 && held():
				moveClockPast(s.Now())
			}
			return dueNow == 0 && later == 0
		})
		received := func() map[string]int {
			got := map[string]int{}
			for _, d := range rcv.Deliveries() {
				if d.Valid && d.Status < 300 {
					var data struct {
						CallID string `json:"callID"`
					}
					d.Decode(t, &data)
					got[data.CallID]++
				}
			}
			return got
		}
		got := received()
		for i, id := range ids {
			want := 0 // dropped
			if i >= calls-limit {
				want = 1 // kept
			}
			if got[id] != want {
				t.Fatalf("call %d of %d: delivered %d times, want %d", i+1, calls, got[id], want)
			}
		}

		// A dropped one is retried by hand like any failed delivery.
		oldest := l[len(l)-1]
		s.Admin().Post("/webhooks/"+wh.ID+"/deliveries/"+oldest.ID+"/retry", nil).Want(http.StatusAccepted)
		rcv.WaitFor(1, func(d testkit.Delivery) bool { return strings.Contains(string(d.Data), ids[0]) })
		s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool { return l[len(l)-1].Status == "delivered" })
		if got := received(); got[ids[0]] != 1 {
			t.Fatalf("the dropped delivery retried by hand: delivered %d times, want once", got[ids[0]])
		}
	})
}
