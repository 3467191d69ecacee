package webhooks_test

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/wait"
	"callsig/webhooks"
)

// Finished deliveries older than the retention leave the delivery log,
// younger ones stay, and a pending delivery is never pruned while pending
// (overdue by half the period it is failed as expired, see below).
func TestRetentionPrunesOnlyFinishedDeliveries(t *testing.T) {
	r := newRig(t)
	okSrv, _ := countingServer(t, nil)
	goneSrv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	downSrv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	ok, gone, down := r.endpoint(okSrv.URL), r.endpoint(goneSrv.URL), r.endpoint(downSrv.URL)
	failed := func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryFailed }
	pending := func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryPending && d.Attempts > 0 }

	// At the epoch: three calls, delivered to ok, failed at gone (its 410
	// disables it, so it may get fewer), pending at down (retrying).
	_, stop := r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter})
	for range 3 {
		r.call()
	}
	wait.For(t, 10*time.Second, "the first deliveries to settle", func() bool {
		return r.count(ok.ID, delivered) == 3 && r.count(gone.ID, failed) == len(r.deliveries(gone.ID)) && r.count(gone.ID, failed) > 0 && r.count(down.ID, pending) == 3
	})
	stop() // down's deliveries stay pending from here on

	// Six days later, one more call, delivered to ok, pending at down.
	r.clock.Advance(6 * 24 * time.Hour)
	_, stop = r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter})
	r.call()
	// down's first three were pending already: the wait is for their
	// second attempt too, or one left due from day 0 is rightly expired
	// below (overdue by more than half the period).
	retried := func(d webhooks.Delivery) bool { return pending(d) && d.Attempts >= 2 }
	wait.For(t, 10*time.Second, "the fourth call's deliveries to settle, down's first three attempted again", func() bool {
		return r.count(ok.ID, delivered) == 4 && r.count(down.ID, pending) == 4 && r.count(down.ID, retried) == 3
	})
	stop()

	ret, err := webhooks.NewRetention(r.store, webhooks.RetentionOptions{
		Clock: r.clock, Period: 7 * 24 * time.Hour, Interval: time.Hour, Batch: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ret.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("retention run: %v", err)
		}
	}()

	// Step the clock by the interval until the epoch's finished deliveries
	// are past retention and pruned (in batches of 2).
	wait.For(t, 10*time.Second, "the retention to prune", func() bool {
		if r.clock.Now().Before(epoch.Add(8 * 24 * time.Hour)) {
			r.clock.Advance(time.Hour)
		}
		return len(r.deliveries(ok.ID)) == 1 && len(r.deliveries(gone.ID)) == 0
	})
	if l := r.deliveries(ok.ID); l[0].CreatedAt != epoch.Add(6*24*time.Hour).UnixMilli() || l[0].Status != webhooks.DeliveryDelivered {
		t.Fatalf("kept %+v, want the delivery within retention", l[0])
	}
	// down's epoch deliveries were attempted again at 6 days: overdue
	// since then, less than half the period, so not expired.
	if n := r.count(down.ID, pending); n != 4 {
		t.Fatalf("%d of down's deliveries pending, want all 4: none is overdue by half the period", n)
	}
}

// A delivery its endpoint never takes (down, its breaker open: no attempt
// counts) is failed as expired once overdue by half the retention period,
// and listed as failed until pruned; retried by hand, it is due again and
// not expired before its attempt.
func TestRetentionExpiresStuckDeliveries(t *testing.T) {
	r := newRig(t)
	downSrv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	down := r.endpoint(downSrv.URL)
	r.call()
	ret, err := webhooks.NewRetention(r.store, webhooks.RetentionOptions{Clock: r.clock, Period: 7 * 24 * time.Hour, Batch: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(84*time.Hour - time.Minute)
	if _, err := ret.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := r.deliveries(down.ID); len(l) == 0 || l[0].Status != webhooks.DeliveryPending {
		t.Fatalf("before half the period: %+v, want pending", l)
	}
	r.clock.Advance(2 * time.Minute)
	if _, err := ret.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := r.deliveries(down.ID)
	if len(l) == 0 {
		t.Fatal("expired deliveries pruned at once, want them listed until the period ends")
	}
	for _, d := range l {
		if d.Status != webhooks.DeliveryFailed || d.LastError != webhooks.ExpiredReason || d.NextAttemptAt != 0 {
			t.Fatalf("after half the period: %+v, want failed as expired", d)
		}
	}
	id, err := strconv.ParseInt(l[0].ID, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	err = r.store.UpdateWebhooks(context.Background(), func(tx webhooks.Tx) error {
		_, err := tx.RetryWebhookDelivery(context.Background(), down.ID, id, r.clock.Now().UnixMilli())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(10 * time.Minute) // the next pass
	if _, err := ret.Prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := r.deliveries(down.ID)[0]; d.Status != webhooks.DeliveryPending {
		t.Fatalf("a retried delivery after the next pass: %+v, want pending", d)
	}
}

// purgeCounter counts the purges of deleted endpoints asked of the store.
type purgeCounter struct {
	webhooks.Store
	purged int
}

func (s *purgeCounter) PurgeDeletedWebhookEndpoints(ctx context.Context, now, before int64, limit int) (int, error) {
	n, err := s.Store.PurgeDeletedWebhookEndpoints(ctx, now, before, limit)
	s.purged += n
	return n, err
}

// A pruning pass purges the endpoints deleted through the API whose
// deliveries are gone, once deleted an hour: every claim checks the dead
// endpoints, so an admin creating and deleting endpoints would otherwise
// slow every claim down. The hour is a margin for a write that read the
// endpoint as live before its deletion (see purgeAfter).
func TestRetentionPurgesDeletedEndpoints(t *testing.T) {
	r := newRig(t)
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	ctx := context.Background()
	for range 3 {
		e := r.endpoint("http://127.0.0.1:1/hook")
		if err := reg.Delete(ctx, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	store := &purgeCounter{Store: r.store}
	ret, err := webhooks.NewRetention(store, webhooks.RetentionOptions{Clock: r.clock, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ret.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if store.purged != 0 {
		t.Fatalf("%d endpoints purged at once, want none within the hour", store.purged)
	}
	r.clock.Advance(time.Hour + time.Second)
	if _, err := ret.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if store.purged != 3 {
		t.Fatalf("%d deleted endpoints purged, want 3", store.purged)
	}
}

// claimsHeld lets the store's first claim through and holds the later
// ones until proceed (or their context ends): nothing renews the lease of
// an attempt in flight meanwhile.
type claimsHeld struct {
	webhooks.Store
	n       atomic.Int32
	proceed chan struct{}
}

func (s *claimsHeld) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	if s.n.Add(1) > 1 {
		select {
		case <-s.proceed:
		case <-ctx.Done():
			return webhooks.Claimed{}, ctx.Err()
		}
	}
	return s.Store.ClaimWebhookDeliveries(ctx, c)
}

// A delivery overdue by half the period whose attempt is in flight when
// its lease runs out (the clock jumped), before a claim renews the lease,
// is not failed as expired under the attempt: the endpoint's answer is
// recorded, not ignored for a lost lease. A lease left by an attempt that
// never records (its node died) holds the expiry off for the margin only.
func TestRetentionLeavesAnAttemptThatOutlivedItsLease(t *testing.T) {
	r := newRig(t)
	url, entered, release := hangingReceiver(t, http.StatusOK)
	e := r.endpoint(url)
	r.call()
	r.clock.Advance(84*time.Hour + time.Minute) // overdue by more than half the period
	store := &claimsHeld{Store: r.store, proceed: make(chan struct{})}
	var proceed sync.Once // a failing test must not leave a claim held
	t.Cleanup(func() { proceed.Do(func() { close(store.proceed) }) })
	d, stop := r.dispatcherOn(store, webhooks.DispatcherOptions{}, nil)
	d.Wake()
	wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })

	r.clock.Advance(3 * time.Minute) // past the 2-minute lease; no claim renews it
	ret, err := webhooks.NewRetention(r.store, webhooks.RetentionOptions{Clock: r.clock, Period: 7 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	prune := func() {
		t.Helper()
		if _, err := ret.Prune(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	prune()
	if l := r.deliveries(e.ID); len(l) != 1 || l[0].Status != webhooks.DeliveryPending {
		t.Fatalf("the delivery whose attempt is in flight, after a pass: %+v, want pending", l)
	}
	close(release)
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
	proceed.Do(func() { close(store.proceed) })
	stop()

	// A lease whose attempt never records.
	r.call()
	r.clock.Advance(84*time.Hour + time.Minute)
	now := r.clock.Now()
	claimed, err := r.store.ClaimWebhookDeliveries(context.Background(), webhooks.Claim{Now: now.UnixMilli(),
		LeaseUntil: now.Add(2 * time.Minute).UnixMilli(), Limit: 1, Share: 1})
	if err != nil || len(claimed.Attempts) != 1 {
		t.Fatalf("claim = %+v (%v), want the new delivery", claimed, err)
	}
	id := strconv.FormatInt(claimed.Attempts[0].DeliveryID, 10)
	status := func() webhooks.Delivery {
		t.Helper()
		for _, d := range r.deliveries(e.ID) {
			if d.ID == id {
				return d
			}
		}
		t.Fatalf("delivery %s gone", id)
		return webhooks.Delivery{}
	}
	r.clock.Advance(2*time.Minute + webhooks.ExpireLeaseMargin - time.Minute)
	prune()
	if d := status(); d.Status != webhooks.DeliveryPending {
		t.Fatalf("a minute before the margin after the lease ends: %+v, want pending", d)
	}
	r.clock.Advance(2 * time.Minute)
	prune()
	if d := status(); d.Status != webhooks.DeliveryFailed || d.LastError != webhooks.ExpiredReason {
		t.Fatalf("after the margin: %+v, want failed as expired", d)
	}
}
