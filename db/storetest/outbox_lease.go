package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"callsig/calls"
	"callsig/db"
	"callsig/webhooks"
)

// An attempt whose lease ran out and was taken over by another attempt (a
// slow node, not a dead one, and a second node claiming the delivery again,
// as it should) can neither end the new lease nor record its outcome, by
// finishing or by releasing: the store answers webhooks.ErrLeaseLost and
// changes nothing. Otherwise the delivery would be claimable again while
// the second attempt is in flight (a third attempt at the same time), and
// the two outcomes would overwrite each other. The lease holder's outcome
// is the one recorded, and a late result after it changes nothing either.
// One store plays both nodes: the lease lives in the row, not the process.
func testLateAttemptCannotEndAnotherAttemptsLease(t *testing.T, s db.Store) {
	// Each case has its endpoint, subscribed to a type of its own.
	for _, tc := range []struct {
		how string
		typ calls.HookType
	}{{"finish", calls.HookCallCreated}, {"release", calls.HookCallEnded}} {
		how, typ := tc.how, tc.typ
		t.Run(how, func(t *testing.T) {
			ctx := context.Background()
			putEndpoint(t, s, how, 1, typ)
			hook(t, s, "c_"+how, typ, 1000)
			// Node A claims at t=2000, leased to t=3000.
			a, _, _ := claim(t, s, webhooks.Claim{Now: 2000, LeaseUntil: 3000, Limit: 4, Share: 4})
			if len(a) != 1 {
				t.Fatalf("node A claimed %+v, want the one delivery", a)
			}
			id := a[0].DeliveryID
			// A's lease lapses; node B takes over at t=4000, until t=100000.
			b, _, _ := claim(t, s, webhooks.Claim{Now: 4000, LeaseUntil: 100_000, Limit: 4, Share: 4})
			if len(b) != 1 || b[0].DeliveryID != id {
				t.Fatalf("node B claimed %+v, want delivery %d again", b, id)
			}

			// A's slow attempt ends now (a 500: retry at t=4500), or A shuts
			// down and releases it.
			late := func() error {
				if how == "release" {
					return s.ReleaseWebhookDelivery(ctx, id, a[0].Lease)
				}
				return finishOne(ctx, s, webhooks.Outcome{DeliveryID: id, Lease: a[0].Lease, EndpointID: how,
					At: 4400, StatusCode: 500, Error: "late", NextAttemptAt: 4500})
			}
			if err := late(); !errors.Is(err, webhooks.ErrLeaseLost) {
				t.Fatalf("node A's late %s = %v, want ErrLeaseLost", how, err)
			}
			// At t=5000 B's attempt is in flight (leased to t=100000): nobody
			// may claim the delivery, and the schedule waits for B's lease.
			if _, ids, _ := claim(t, s, webhooks.Claim{Now: 5000, LeaseUntil: 200_000, Limit: 4, Share: 4}); len(ids) != 0 {
				t.Fatalf("delivery claimed again at t=5000 while node B's lease runs to t=100000: node A's late %s ended it", how)
			}
			if due, err := s.NextWebhookDue(ctx, 5000); err != nil || len(due.Endpoints) != 0 || due.LeaseEnd != 100_000 {
				t.Fatalf("NextWebhookDue(5000) = %+v (%v), want nothing due, B's lease ending at 100000", due, err)
			}
			if l := deliveries(t, s, how); len(l) != 1 || l[0].Status != webhooks.DeliveryPending ||
				l[0].Attempts != 0 || l[0].LastStatusCode != 0 || l[0].LastError != "" {
				t.Fatalf("after node A's late %s: %+v, want it untouched (pending, no attempt recorded)", how, l)
			}

			// B's outcome is recorded; A's result, late again, changes nothing.
			finish(t, s, webhooks.Outcome{DeliveryID: id, Lease: b[0].Lease, EndpointID: how, At: 6000, StatusCode: 204, Delivered: true})
			if err := late(); !errors.Is(err, webhooks.ErrLeaseLost) {
				t.Fatalf("node A's %s after B's outcome = %v, want ErrLeaseLost", how, err)
			}
			if l := deliveries(t, s, how); len(l) != 1 || l[0].Status != webhooks.DeliveryDelivered ||
				l[0].Attempts != 1 || l[0].LastStatusCode != 204 || l[0].DeliveredAt != 6000 {
				t.Fatalf("after B's outcome and A's late %s: %+v, want B's: delivered at 6000, 1 attempt", how, l)
			}
		})
	}
}

// A claim renews the run-out lease of an attempt in flight here only while
// the delivery still holds it. An attempt that has just recorded its
// outcome (a retry due at once, or due by the time the claim runs) is in
// flight for the dispatcher a moment longer: renewing then leased the
// pending delivery to nobody, and its retry waited a whole lease.
func testClaimRenewsOnlyTheLeaseHeld(t *testing.T, s db.Store) {
	putEndpoint(t, s, "renew", 1, calls.HookCallCreated)
	hook(t, s, "c_renew", calls.HookCallCreated, 1000)
	a, _, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 4, Share: 4})
	if len(a) != 1 {
		t.Fatalf("claimed %+v, want the one delivery", a)
	}
	id := a[0].DeliveryID
	// The attempt fails; its retry is due at 1500.
	finish(t, s, webhooks.Outcome{DeliveryID: id, Lease: a[0].Lease, EndpointID: "renew", At: 1400, StatusCode: 503, NextAttemptAt: 1500})
	// A claim at 1500 still counts the attempt in flight: it skips the
	// delivery and renews nothing.
	claimed, err := s.ClaimWebhookDeliveries(context.Background(), webhooks.Claim{Now: 1500, LeaseUntil: 100_000, Limit: 4, Share: 4,
		InFlight: map[int64]int64{id: a[0].Lease}})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed.Attempts) != 0 || len(claimed.Renewed) != 0 {
		t.Fatalf("claim beside the finished attempt = %+v, want nothing claimed or renewed", claimed)
	}
	// Once the dispatcher knows the attempt is over, the retry is due.
	if due, err := s.NextWebhookDue(context.Background(), 1500); err != nil || due.Endpoints["renew"] != 1500 || due.LeaseEnd != 0 {
		t.Fatalf("NextWebhookDue(1500) = %+v (%v), want the retry due at 1500 and no lease", due, err)
	}
	if b, _, _ := claim(t, s, webhooks.Claim{Now: 1500, LeaseUntil: 100_000, Limit: 4, Share: 4}); len(b) != 1 || b[0].DeliveryID != id {
		t.Fatalf("claimed %+v at 1500, want the retry of delivery %d", b, id)
	}
}

// A claim renews the run-out lease of an attempt in flight here even when
// it may take nothing new: its endpoint at its share (Free 0), or every
// worker busy (Limit 0), and whatever else of the endpoint is due before
// it. It used to find such a lease only among the endpoint's due
// deliveries it read, and the delivery, unleased while its attempt went
// on, was another process's to send again.
func testClaimRenewsRunOutLeaseWhenFull(t *testing.T, s db.Store) {
	putEndpoint(t, s, "full", 1, calls.HookCallCreated)
	hook(t, s, "c_full1", calls.HookCallCreated, 1000)
	hook(t, s, "c_full2", calls.HookCallCreated, 1000)
	// Another process takes the first delivery and lets it go at its
	// shutdown: due before ours, and unleased.
	x, _, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 1500, Limit: 1, Share: 1})
	a, _, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 1, Share: 1})
	if len(x) != 1 || len(a) != 1 {
		t.Fatalf("claimed %+v and %+v, want a delivery each", x, a)
	}
	if err := s.ReleaseWebhookDelivery(context.Background(), x[0].DeliveryID, x[0].Lease); err != nil {
		t.Fatal(err)
	}
	id, lease := a[0].DeliveryID, a[0].Lease
	for i, c := range []webhooks.Claim{
		{Now: 3000, LeaseUntil: 5000, Limit: 4, Share: 4, Free: map[string]int{"full": 0}},
		{Now: 6000, LeaseUntil: 8000, Limit: 0, Share: 4},
	} {
		c.InFlight = map[int64]int64{id: lease}
		claimed, err := s.ClaimWebhookDeliveries(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		if len(claimed.Attempts) != 0 || len(claimed.Renewed) != 1 || claimed.Renewed[0] != id {
			t.Fatalf("claim %d (%+v) = %+v, want only delivery %d renewed", i, c, claimed, id)
		}
		lease = c.LeaseUntil
		due, err := s.NextWebhookDue(context.Background(), c.Now)
		if err != nil || due.LeaseEnd != c.LeaseUntil {
			t.Fatalf("after claim %d NextWebhookDue = %+v (%v), want the lease ending at %d", i, due, err, c.LeaseUntil)
		}
	}
	// Another process finds only the released delivery to take.
	b, _, _ := claim(t, s, webhooks.Claim{Now: 6000, LeaseUntil: 9000, Limit: 4, Share: 4})
	if len(b) != 1 || b[0].DeliveryID != x[0].DeliveryID {
		t.Fatalf("another process claimed %+v, want only delivery %d", b, x[0].DeliveryID)
	}
}

// A 410 recorded for an address the endpoint no longer has (its URL
// changed while the attempt ran) neither disables the endpoint nor fails
// its deliveries: the delivery is due again at once, for the new address.
// From the address it still has, the 410 disables it as ever.
func testGoneFromAnOldURLKeepsTheEndpoint(t *testing.T, s db.Store) {
	putEndpoint(t, s, "moved", 1, calls.HookCallCreated)
	hook(t, s, "c_moved", calls.HookCallCreated, 1000)
	a, _, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 2000, Limit: 1, Share: 1})
	if len(a) != 1 {
		t.Fatalf("claimed %+v, want the delivery", a)
	}
	oldURL := a[0].URL
	moved := &webhooks.Endpoint{ID: "moved", URL: "https://elsewhere.example/hook", Secret: "whsec_moved",
		EventTypes: []calls.HookType{calls.HookCallCreated}, CreatedAt: 1}
	if err := s.PutWebhookEndpoint(context.Background(), moved); err != nil {
		t.Fatal(err)
	}
	gone := webhooks.Outcome{DeliveryID: a[0].DeliveryID, Lease: a[0].Lease, EndpointID: "moved", At: 1500,
		StatusCode: 410, Error: "endpoint answered 410 Gone", DisableReason: "endpoint answered 410 Gone", URL: oldURL}
	finish(t, s, gone)
	e, err := s.WebhookEndpoint(context.Background(), "moved")
	if err != nil || !e.Enabled {
		t.Fatalf("endpoint after the old address's 410: %+v (%v), want enabled", e, err)
	}
	if due, err := s.NextWebhookDue(context.Background(), 1500); err != nil || due.Endpoints["moved"] != 1500 {
		t.Fatalf("NextWebhookDue(1500) = %+v (%v), want the delivery due at once", due, err)
	}
	b, _, _ := claim(t, s, webhooks.Claim{Now: 1500, LeaseUntil: 3000, Limit: 1, Share: 1})
	if len(b) != 1 || b[0].URL != moved.URL {
		t.Fatalf("claimed %+v, want the delivery for the new address", b)
	}
	gone.Lease, gone.At, gone.URL = b[0].Lease, 1600, moved.URL
	finish(t, s, gone)
	if e, err := s.WebhookEndpoint(context.Background(), "moved"); err != nil || e.Enabled {
		t.Fatalf("endpoint after its own address's 410: %+v (%v), want disabled", e, err)
	}
}

// A claim renewing the run-out leases of attempts in flight and a write of
// those attempts' outcomes, at the same time, both succeed: they lock the
// same rows, and in two orders PostgreSQL aborted one of them as a
// deadlock (in 7 of 30 tries of one round, the outcomes given in reverse).
// Whichever commits first wins each row; the other is fenced off it.
func testRenewalAndOutcomesDoNotDeadlock(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "race", 1, calls.HookCallCreated)
	const perRound = 40
	for round := range 8 {
		base := int64(10_000 * (round + 1))
		for i := range perRound {
			hook(t, s, fmt.Sprintf("c_race_%d_%d", round, i), calls.HookCallCreated, base)
		}
		got, _, _ := claim(t, s, webhooks.Claim{Now: base, LeaseUntil: base + 100, Limit: perRound, Share: perRound})
		if len(got) != perRound {
			t.Fatalf("round %d: claimed %d, want %d", round, len(got), perRound)
		}
		inFlight := map[int64]int64{}
		var outcomes []webhooks.Outcome
		for i := len(got) - 1; i >= 0; i-- { // the other order
			a := got[i]
			inFlight[a.DeliveryID] = a.Lease
			outcomes = append(outcomes, webhooks.Outcome{DeliveryID: a.DeliveryID, Lease: a.Lease, EndpointID: "race",
				At: base + 200, StatusCode: 204, Delivered: true})
		}
		var wg sync.WaitGroup
		var claimErr, finishErr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, claimErr = s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: base + 200, LeaseUntil: base + 5_000, Share: perRound, InFlight: inFlight})
		}()
		go func() {
			defer wg.Done()
			_, finishErr = s.FinishWebhookAttempts(ctx, outcomes)
		}()
		wg.Wait()
		if claimErr != nil || finishErr != nil {
			t.Fatalf("round %d: renewing claim: %v; outcomes: %v", round, claimErr, finishErr)
		}
	}
}
