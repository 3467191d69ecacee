package webhooks_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"callsig/webhooks"
)

// backlogCutFails fails the backlog cut of one endpoint.
type backlogCutFails struct {
	webhooks.Store
	endpointID string
}

func (s *backlogCutFails) WebhookBacklogCut(ctx context.Context, endpointID string, keep int) (int64, error) {
	if endpointID == s.endpointID {
		return 0, errors.New("cut out of reach")
	}
	return s.Store.WebhookBacklogCut(ctx, endpointID, keep)
}

// A pass keeps each endpoint's newest MaxPending pending deliveries and
// fails the older ones as dropped; one endpoint whose backlog cannot be
// read leaves the others' bounds, and the pruning, to the pass.
func TestRetentionDropsTheBacklogBeyondTheLimit(t *testing.T) {
	r := newRig(t)
	a, b := r.endpoint("http://127.0.0.1:1/a"), r.endpoint("http://127.0.0.1:1/b")
	for range 5 {
		r.call()
	}
	store := &backlogCutFails{Store: r.store, endpointID: a.ID}
	ret, err := webhooks.NewRetention(store, webhooks.RetentionOptions{Clock: r.clock, Period: time.Hour, MaxPending: 2, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Old enough to prune, were it finished: the pass must still run.
	r.clock.Advance(2 * time.Hour)
	if _, err := ret.Prune(context.Background()); err != nil {
		t.Fatalf("a pass with one endpoint's backlog out of reach: %v, want the pass done", err)
	}
	if n := r.count(a.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryPending }); n != 5 {
		t.Fatalf("%d of a's deliveries pending, want all 5 (its cut failed)", n)
	}
	l := r.deliveries(b.ID) // newest first
	for i, d := range l {
		dropped := d.Status == webhooks.DeliveryFailed && d.LastError == webhooks.DroppedReason(2)
		if kept := i < 2; kept != (d.Status == webhooks.DeliveryPending) || !kept && !dropped {
			t.Fatalf("b's delivery %d of %d (newest first): %+v, want the newest 2 pending, the rest dropped", i, len(l), d)
		}
	}
	// The dropped are finished: the next pass past the period prunes them.
	r.clock.Advance(2 * time.Hour)
	if _, err := ret.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := r.deliveries(b.ID); len(l) != 2 {
		t.Fatalf("b's deliveries after the period: %+v, want the 2 pending ones", l)
	}
}
