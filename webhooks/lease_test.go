package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/internal/wait"
	"callsig/webhooks"
)

// hangingReceiver answers every request with status, the first one only
// once release is closed; entered counts the requests that came in.
func hangingReceiver(t *testing.T, status int) (url string, entered *atomic.Int32, release chan struct{}) {
	entered, release = new(atomic.Int32), make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, req *http.Request) {
		if entered.Add(1) == 1 {
			select {
			case <-release:
			case <-req.Context().Done():
			}
		}
		w.WriteHeader(status)
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return srv.URL, entered, release
}

// within receives from ch, failing t with what after 10 seconds.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func fenced(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return family(t, reg, "callsig_webhook_results_fenced_total").GetMetric()[0].GetCounter().GetValue()
}

// A dispatcher whose attempt outlived its lease (a slow node, or another
// node's clock running ahead) while another node took the delivery over
// records nothing when its attempt ends: the other node's lease stands, so
// no third attempt starts, and only the other node's outcome will count.
// The ignored result is logged and counted.
func TestDispatcherIgnoresResultOfLeaseTakenOver(t *testing.T) {
	r := newRig(t)
	url, entered, release := hangingReceiver(t, http.StatusInternalServerError)
	e := r.endpoint(url)
	reg := prometheus.NewRegistry()
	r.dispatcher(webhooks.DispatcherOptions{Registry: reg})
	r.call()
	wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })

	// Another node, 3 minutes later by its clock, finds the lease (2
	// minutes) run out and takes the delivery over for 10 minutes.
	ctx := context.Background()
	later, until := epoch.Add(3*time.Minute).UnixMilli(), epoch.Add(13*time.Minute).UnixMilli()
	b, err := r.store.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: later, LeaseUntil: until, Limit: 1, Share: 1})
	if err != nil || len(b.Attempts) != 1 {
		t.Fatalf("the other node's claim = %+v (%v), want the delivery", b, err)
	}

	close(release) // the first attempt's answer, a 500, comes in late
	wait.For(t, 10*time.Second, "the late result counted as fenced", func() bool { return fenced(t, reg) == 1 })
	if d := r.deliveries(e.ID); len(d) != 1 || d[0].Status != webhooks.DeliveryPending || d[0].Attempts != 0 || d[0].LastStatusCode != 0 {
		t.Fatalf("after the late result: %+v, want it untouched", d)
	}
	if due, err := r.store.NextWebhookDue(ctx, later); err != nil || due.LeaseEnd != until || len(due.Endpoints) != 0 {
		t.Fatalf("NextWebhookDue = %+v (%v), want the other node's lease to %d standing", due, err, until)
	}
	if n := entered.Load(); n != 1 {
		t.Fatalf("%d requests, want 1: the delivery was sent again under the other node's lease", n)
	}

	// The other node's outcome is recorded.
	err = r.store.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: b.Attempts[0].DeliveryID, Lease: b.Attempts[0].Lease,
		EndpointID: e.ID, At: later + 10, StatusCode: http.StatusOK, Delivered: true})
	if err != nil {
		t.Fatal(err)
	}
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
}

// An attempt that outlives its lease with nobody taking the delivery over
// (the clock jumped) has its lease renewed by the dispatcher's next claim,
// and its outcome, carrying the renewed lease, is recorded: the delivery is
// neither sent again nor left pending. That holds too when the claim has
// nothing else to take: the endpoint at its share, or every worker busy
// (the claim used to skip the endpoint, or not run, and left the delivery
// unleased for another node to send while the attempt went on).
func TestDispatcherRenewsLeaseOfAttemptThatOutlivedIt(t *testing.T) {
	for name, o := range map[string]webhooks.DispatcherOptions{
		"free share":        {},
		"endpoint at share": {Share: 1},
		"every worker busy": {Workers: 1},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			url, entered, release := hangingReceiver(t, http.StatusOK)
			e := r.endpoint(url)
			reg := prometheus.NewRegistry()
			o.Registry = reg
			d, _ := r.dispatcher(o)
			r.call()
			wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })

			r.clock.Advance(3 * time.Minute) // past the 2-minute lease
			d.Wake()
			now, renewed := epoch.Add(3*time.Minute).UnixMilli(), epoch.Add(5*time.Minute).UnixMilli()
			wait.For(t, 10*time.Second, "the lease renewed", func() bool {
				due, err := r.store.NextWebhookDue(context.Background(), now)
				return err == nil && due.LeaseEnd == renewed
			})
			// Another node (or a process started after a crash) finds the
			// delivery leased.
			other, _ := r.dispatcher(o)
			other.Wake()

			close(release)
			r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
			if n := fenced(t, reg); n != 0 {
				t.Errorf("%v results fenced, want 0: the renewed lease is the attempt's own", n)
			}
			if n := entered.Load(); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

// renewalHeld is a store whose claims, once one has renewed a lease, wait
// for proceed before the dispatcher hears of the renewal; it reports the
// finishes it is asked for.
type renewalHeld struct {
	webhooks.Store
	renewed, proceed chan struct{}
	once             sync.Once
	finishes         chan error
}

func (s *renewalHeld) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	claimed, err := s.Store.ClaimWebhookDeliveries(ctx, c)
	if len(claimed.Renewed) > 0 {
		s.once.Do(func() { close(s.renewed) })
		<-s.proceed
	}
	return claimed, err
}

// FinishWebhookAttempts reports each outcome's result: ErrLeaseLost for
// a lost lease.
func (s *renewalHeld) FinishWebhookAttempts(ctx context.Context, o []webhooks.Outcome) ([]bool, error) {
	lost, err := s.Store.FinishWebhookAttempts(ctx, o)
	for i := range o {
		switch {
		case err != nil:
			s.finishes <- err
		case lost[i]:
			s.finishes <- webhooks.ErrLeaseLost
		default:
			s.finishes <- nil
		}
	}
	return lost, err
}

// An attempt that records its outcome after a claim renewed its lease but
// before the dispatcher heard of it is refused for the old lease; the
// dispatcher waits for that claim and records the outcome again with the
// renewed lease, so it is not lost.
func TestDispatcherRecordsWithALeaseRenewedMeanwhile(t *testing.T) {
	r := newRig(t)
	url, entered, release := hangingReceiver(t, http.StatusOK)
	e := r.endpoint(url)
	reg := prometheus.NewRegistry()
	store := &renewalHeld{Store: r.store, renewed: make(chan struct{}), proceed: make(chan struct{}), finishes: make(chan error, 4)}
	d, err := webhooks.NewDispatcher(store, webhooks.DispatcherOptions{Clock: r.clock, Registry: reg,
		Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dispatcher run: %v", err)
		}
	})
	var proceed sync.Once // a failing test must not leave the claim held
	t.Cleanup(func() { proceed.Do(func() { close(store.proceed) }) })
	*r.wake.fns = append(*r.wake.fns, d.Wake)
	r.call()
	wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })

	r.clock.Advance(3 * time.Minute) // past the 2-minute lease
	d.Wake()
	within(t, store.renewed, "the lease renewed") // committed, the dispatcher not told yet
	close(release)
	if err := within(t, store.finishes, "the finish with the old lease"); !errors.Is(err, webhooks.ErrLeaseLost) {
		t.Fatalf("the finish with the old lease = %v, want ErrLeaseLost", err)
	}
	proceed.Do(func() { close(store.proceed) })
	if err := within(t, store.finishes, "the finish with the renewed lease"); err != nil {
		t.Fatalf("the finish with the renewed lease = %v, want it recorded", err)
	}
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
	if n := fenced(t, reg); n != 0 {
		t.Errorf("%v results fenced, want 0", n)
	}
}

// A 410 that comes back from the address the endpoint had when its attempt
// began, after the endpoint was given another (CALLSIG_WEBHOOK_URL changed
// at a restart), says nothing of the new address: the endpoint stays
// enabled and the delivery goes to the new address, which takes it.
func TestGoneFromAnOldURLLeavesTheNewOne(t *testing.T) {
	r := newRig(t)
	oldURL, entered, release := hangingReceiver(t, http.StatusGone)
	newSrv, newHits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {})
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	ctx := context.Background()
	secret := webhooks.NewSecret()
	if err := reg.Configure(ctx, oldURL, secret); err != nil {
		t.Fatal(err)
	}
	r.dispatcher(webhooks.DispatcherOptions{})
	r.call()
	wait.For(t, 10*time.Second, "the attempt to the old address", func() bool { return entered.Load() == 1 })
	if err := reg.Configure(ctx, newSrv.URL, secret); err != nil {
		t.Fatal(err)
	}
	close(release) // the old address answers 410
	r.waitDelivery(webhooks.ConfiguredID, attempts(2, webhooks.DeliveryDelivered))
	if n := newHits.Load(); n < 1 {
		t.Errorf("%d requests to the new address, want the delivery", n)
	}
	e, err := r.store.WebhookEndpoint(ctx, webhooks.ConfiguredID)
	if err != nil || !e.Enabled || e.URL != newSrv.URL {
		t.Fatalf("endpoint %+v (%v), want enabled at the new address", e, err)
	}
}

// claimCounter counts the claims asked of the store.
type claimCounter struct {
	webhooks.Store
	n atomic.Int64
}

func (s *claimCounter) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	s.n.Add(1)
	return s.Store.ClaimWebhookDeliveries(ctx, c)
}

// With every worker busy and the lease of one attempt run out and taken
// over by another process (so it cannot be renewed), the dispatcher waits
// for a finishing attempt: it does not claim again and again while
// another endpoint's delivery is due and waiting for a worker.
func TestBusyDispatcherWithALostLeaseDoesNotSpin(t *testing.T) {
	r := newRig(t)
	url, entered, release := hangingReceiver(t, http.StatusOK)
	e := r.endpoint(url)
	store := &claimCounter{Store: r.store}
	d, _ := r.dispatcherOn(store, webhooks.DispatcherOptions{Workers: 1}, nil)
	t.Cleanup(func() { close(release) }) // before the dispatcher stops
	r.call()
	wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })
	f := r.endpoint("http://127.0.0.1:1/hook")
	r.call() // f's delivery is due; the one worker is busy
	r.clock.Advance(3 * time.Minute)
	later := r.clock.Now()
	taken, err := r.store.ClaimWebhookDeliveries(context.Background(), webhooks.Claim{Now: later.UnixMilli(),
		LeaseUntil: later.Add(10 * time.Minute).UnixMilli(), Limit: 1, Share: 1, Free: map[string]int{f.ID: 0}})
	if err != nil || len(taken.Attempts) != 1 || taken.Attempts[0].EndpointID != e.ID {
		t.Fatalf("another process's claim = %+v (%v), want e's delivery", taken, err)
	}
	before := store.n.Load()
	d.Wake()
	time.Sleep(300 * time.Millisecond)
	if n := store.n.Load() - before; n > 3 {
		t.Fatalf("%d claims in 300 ms with the one worker busy: the dispatcher spins", n)
	}
}

// A busy dispatcher (every worker in an attempt) keeps renewing the lease
// of a long attempt by itself, however often it runs out: after two jumps
// of the clock past it, or when it runs out after a wake that found it
// still valid. It renewed once and set no timer, and the second time the
// lease ran out another process could send the delivery again.
func TestBusyDispatcherKeepsRenewing(t *testing.T) {
	for name, steps := range map[string][]time.Duration{
		"two jumps past the lease":             {3 * time.Minute, 3 * time.Minute},
		"runs out after a wake found it valid": {90 * time.Second, 60 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			url, entered, release := hangingReceiver(t, http.StatusOK)
			r.endpoint(url)
			d, _ := r.dispatcher(webhooks.DispatcherOptions{Workers: 1})
			t.Cleanup(func() { close(release) })
			r.call()
			wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })
			ctx := context.Background()
			for i, step := range steps {
				wait.For(t, 5*time.Second, "the dispatcher's timer", func() bool { return d.TimerAt() > r.clock.Now().UnixMilli() })
				r.clock.Advance(step)
				now := r.clock.Now().UnixMilli()
				wait.For(t, 5*time.Second, fmt.Sprintf("the lease renewed after step %d", i), func() bool {
					due, err := r.store.NextWebhookDue(ctx, now)
					return err == nil && due.LeaseEnd > now
				})
			}
		})
	}
}

// With a worker free, a delivery in flight here that another process took
// over and then let go (its shutdown) is due, yet not claimable here while
// the attempt goes on: the dispatcher does not claim again and again
// meanwhile.
func TestFreeDispatcherDoesNotSpinOnItsOwnReleasedDelivery(t *testing.T) {
	r := newRig(t)
	url, entered, release := hangingReceiver(t, http.StatusOK)
	r.endpoint(url)
	store := &claimCounter{Store: r.store}
	d, _ := r.dispatcherOn(store, webhooks.DispatcherOptions{Workers: 2}, nil)
	t.Cleanup(func() { close(release) })
	r.call()
	wait.For(t, 10*time.Second, "the attempt in flight", func() bool { return entered.Load() == 1 })
	ctx := context.Background()
	later := epoch.Add(3 * time.Minute) // the other process's clock
	taken, err := r.store.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: later.UnixMilli(),
		LeaseUntil: later.Add(10 * time.Minute).UnixMilli(), Limit: 1, Share: 1})
	if err != nil || len(taken.Attempts) != 1 {
		t.Fatalf("the other process's claim = %+v (%v)", taken, err)
	}
	if err := r.store.ReleaseWebhookDelivery(ctx, taken.Attempts[0].DeliveryID, taken.Attempts[0].Lease); err != nil {
		t.Fatal(err)
	}
	before := store.n.Load()
	d.Wake()
	time.Sleep(300 * time.Millisecond)
	if n := store.n.Load() - before; n > 3 {
		t.Fatalf("%d claims in 300 ms with nothing claimable: the dispatcher spins", n)
	}
}
