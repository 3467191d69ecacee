package e2e

import (
	"fmt"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// The dispatcher sends at most an endpoint's share of deliveries to it at
// once and never one delivery twice at the same time, even when a slow
// attempt outlives its lease.
func TestWebhookDispatcherNeverSendsOneDeliveryTwiceAtOnce(t *testing.T) {
	const share = 4 // the endpoint's share, kept small (the default is webhooks.DefaultShare)
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.WebhookShare = share }))
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	release := rcv.Hold()
	defer release()
	alice := s.Client("alice")

	// All but one of the share's attempts hang at the receiver.
	for i := range share - 1 {
		alice.Invite(nil, fmt.Sprintf("u%d", i))
	}
	rcv.WaitInFlight(share - 1)

	// Their leases run out while they are still in flight, and a new
	// commit wakes the dispatcher: it must not send them again.
	s.Advance(3 * time.Minute)
	alice.Invite(nil, "last")
	rcv.WaitInFlight(share)
	time.Sleep(quietPeriod)
	if perID, _ := rcv.Concurrency(); perID != 1 {
		t.Fatalf("one delivery was in flight %d times at once", perID)
	}

	// More work than the share: concurrency stays bounded.
	for i := share; i < 20; i++ {
		alice.Invite(nil, fmt.Sprintf("u%d", i))
	}
	time.Sleep(quietPeriod)
	if n := rcv.InFlight(); n != share {
		t.Fatalf("%d attempts in flight, want the endpoint's share, %d", n, share)
	}

	release()
	got := rcv.WaitFor(20, nil)
	s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		for _, d := range l {
			if d.Status != "delivered" || d.Attempts != 1 {
				return false
			}
		}
		return len(l) == 20
	})
	ids := map[string]int{}
	for _, d := range got {
		ids[d.ID]++
	}
	perID, total := rcv.Concurrency()
	if len(got) != 20 || len(ids) != 20 || perID != 1 || total != share {
		t.Fatalf("%d deliveries of %d ids; at once: %d per id, %d in total", len(got), len(ids), perID, total)
	}
}
