package storetest

import (
	"context"
	"slices"
	"testing"

	"callsig/calls"
	"callsig/db"
	"callsig/webhooks"
)

// An endpoint's backlog beyond its newest keep pending deliveries is cut
// at the newest of the rest, and dropping fails those up to the cut, a
// bounded batch per call, with the reason as their last error: never a
// delivery its attempt holds leased, one finished, one newer than the cut
// or another endpoint's. A dropped delivery is claimed no more; retried
// by hand, it is pending again and counts in the backlog like any other.
func testDropWebhookBacklog(t *testing.T, s db.Store) {
	ctx := context.Background()
	putEndpoint(t, s, "a", 1)
	putEndpoint(t, s, "b", 2)
	for i, id := range []string{"m1", "m2", "m3", "m4", "m5", "m6"} {
		hook(t, s, id, calls.HookCallCreated, int64(100*(i+1)))
	}
	a := deliveryIDs(t, s, "a")
	// a[0] delivered, a[1] leased until 3000 (and b's first two).
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 1000, LeaseUntil: 3000, Limit: 10, Share: 2}); len(ids) != 4 {
		t.Fatalf("claimed %v, want 2 of each endpoint", ids)
	}
	finish(t, s, webhooks.Outcome{DeliveryID: a[0], Lease: 3000, EndpointID: "a", At: 1000, StatusCode: 200, Delivered: true})

	cut := func(keep int, want int64) {
		t.Helper()
		if got, err := s.WebhookBacklogCut(ctx, "a", keep); err != nil || got != want {
			t.Fatalf("WebhookBacklogCut(a, %d) = %d (%v), want %d", keep, got, err, want)
		}
	}
	cut(5, 0)    // a[1]..a[5] pending: within 5
	cut(4, a[1]) // the oldest pending is beyond the newest 4
	cut(2, a[3]) // a[4] and a[5] kept
	reason := webhooks.DroppedReason(2)
	for i, want := range []int{1, 1, 0} {
		n, err := s.DropWebhookDeliveries(ctx, "a", a[3], 2000, reason, 1)
		if err != nil || n != want {
			t.Fatalf("drop %d: failed %d (%v), want %d", i, n, err, want)
		}
	}
	status := func(endpointID string) []string {
		var out []string
		for _, d := range deliveries(t, s, endpointID) {
			st := string(d.Status)
			if d.Status == webhooks.DeliveryFailed {
				if d.LastError != reason || d.NextAttemptAt != 0 {
					t.Errorf("dropped delivery %+v, want last error %q, no next attempt", d, reason)
				}
			}
			out = append(out, st)
		}
		return out
	}
	if got, want := status("a"), []string{"delivered", "pending", "failed", "failed", "pending", "pending"}; !slices.Equal(got, want) {
		t.Errorf("a's deliveries after the drop: %v, want %v (the leased one kept until its lease ends)", got, want)
	}
	if got, want := status("b"), []string{"pending", "pending", "pending", "pending", "pending", "pending"}; !slices.Equal(got, want) {
		t.Errorf("b's deliveries after a's drop: %v, want %v", got, want)
	}
	// Its lease over, the leased one goes too.
	if n, err := s.DropWebhookDeliveries(ctx, "a", a[3], 3000, reason, 10); err != nil || n != 1 {
		t.Fatalf("drop after the lease: failed %d (%v), want 1", n, err)
	}
	cut(2, 0)
	// The dropped are claimed no more: a's claim takes the two kept.
	if _, ids, _ := claim(t, s, webhooks.Claim{Now: 4000, LeaseUntil: 5000, Limit: 10, Share: 10}); !slices.Contains(ids, a[4]) ||
		!slices.Contains(ids, a[5]) || slices.Contains(ids, a[1]) || slices.Contains(ids, a[2]) || slices.Contains(ids, a[3]) {
		t.Fatalf("claimed %v after the drop, want a's %v and %v and none dropped", ids, a[4], a[5])
	}
	// An admin's retry makes a dropped one pending again; it is the
	// oldest of a's backlog.
	err := s.UpdateWebhooks(ctx, func(tx webhooks.Tx) error {
		_, err := tx.RetryWebhookDelivery(ctx, "a", a[2], 5000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cut(2, a[2])
}
