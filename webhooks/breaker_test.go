package webhooks_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"callsig/internal/wait"
	"callsig/webhooks"
)

// deliveries lists an endpoint's deliveries, newest first.
func (r *rig) deliveries(endpointID string) []webhooks.Delivery {
	r.t.Helper()
	l, err := r.store.WebhookDeliveries(context.Background(), endpointID, webhooks.DeliveryQuery{})
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// count returns how many of an endpoint's deliveries match.
func (r *rig) count(endpointID string, match func(webhooks.Delivery) bool) int {
	n := 0
	for _, d := range r.deliveries(endpointID) {
		if match(d) {
			n++
		}
	}
	return n
}

func delivered(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered }

// labeled returns the value of a gauge or counter with label webhook=id.
//
// A vector with no child yet is not gathered at all: that is -1 too, as
// the breaker records an attempt's failure just after the store does, and
// a test polling for the first state can look in between.
func labeled(t *testing.T, reg *prometheus.Registry, name, id string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var metrics []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() == name {
			metrics = mf.GetMetric()
		}
	}
	for _, m := range metrics {
		for _, l := range m.GetLabel() {
			if l.GetName() == "webhook" && l.GetValue() == id {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// An endpoint that keeps failing opens its breaker: its deliveries wait,
// pending with no attempt counted, while another endpoint is served; after
// the cool-down one probe is sent; a failed probe opens it again for twice
// as long; a successful one closes it and the backlog is delivered.
func TestDispatcherCircuitBreaker(t *testing.T) {
	r := newRig(t)
	var down atomic.Bool
	down.Store(true)
	srv, hits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	okSrv, _ := countingServer(t, nil)
	failing, healthy := r.endpoint(srv.URL), r.endpoint(okSrv.URL)
	reg := prometheus.NewRegistry()
	r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg,
		Breaker: webhooks.BreakerOptions{Failures: 3, CoolDown: time.Minute}})

	// Three failures in a row open it.
	for range 3 {
		r.call()
	}
	wait.For(t, 10*time.Second, "three first attempts to the failing endpoint", func() bool {
		return r.count(failing.ID, func(d webhooks.Delivery) bool { return d.Attempts == 1 }) == 3
	})
	wait.For(t, 10*time.Second, "the breaker to open", func() bool {
		return labeled(t, reg, "callsig_webhook_breaker_state", failing.ID) == webhooks.BreakerOpen
	})
	if n := labeled(t, reg, "callsig_webhook_breaker_opened_total", failing.ID); n != 1 {
		t.Fatalf("breaker opened %v times", n)
	}

	// While open, nothing is sent to it, not even the retries now due;
	// the healthy endpoint's delivery of the same call is the marker that
	// the dispatcher looked.
	r.call()
	r.clock.Advance(5 * time.Second) // the three retries fall due
	r.call()
	wait.For(t, 10*time.Second, "the healthy endpoint's fifth delivery", func() bool { return r.count(healthy.ID, delivered) == 5 })
	if n := hits.Load(); n != 3 {
		t.Fatalf("%d attempts to an endpoint whose breaker is open, want the 3 that opened it", n)
	}
	for _, d := range r.deliveries(failing.ID) {
		if d.Status != webhooks.DeliveryPending {
			t.Fatalf("a delivery of an open breaker is %s, want pending (postponed): %+v", d.Status, d)
		}
	}

	// After the cool-down: one probe; it fails, so the breaker opens again
	// for twice the cool-down.
	r.clock.Advance(time.Minute)
	wait.For(t, 10*time.Second, "the breaker to open again after the failed probe", func() bool {
		return labeled(t, reg, "callsig_webhook_breaker_opened_total", failing.ID) == 2
	})
	if n := hits.Load(); n != 4 {
		t.Fatalf("%d attempts after the cool-down, want one probe", n-3)
	}
	r.clock.Advance(time.Minute) // half of the doubled cool-down
	r.call()
	wait.For(t, 10*time.Second, "the healthy endpoint's sixth delivery", func() bool { return r.count(healthy.ID, delivered) == 6 })
	if n := hits.Load(); n != 4 {
		t.Fatalf("%d attempts during the doubled cool-down", n-4)
	}

	// The receiver is back: the next probe closes the breaker and the
	// whole backlog goes out.
	down.Store(false)
	r.clock.Advance(time.Minute)
	wait.For(t, 10*time.Second, "the failing endpoint's backlog to be delivered", func() bool { return r.count(failing.ID, delivered) == 6 })
	// Closed and healthy is every endpoint's default: its series go (an
	// endpoint that tripped, recovered and was then deleted left them).
	if s := labeled(t, reg, "callsig_webhook_breaker_state", failing.ID); s != -1 {
		t.Fatalf("breaker state %v after a successful probe, want no series", s)
	}
	if n := labeled(t, reg, "callsig_webhook_breaker_opened_total", failing.ID); n != -1 {
		t.Fatalf("breaker trips %v after a successful probe, want no series", n)
	}
	for _, d := range r.deliveries(failing.ID) {
		if d.Attempts > 2 {
			t.Fatalf("a delivery took %d attempts: the breaker must not spend them", d.Attempts)
		}
	}
}

// An endpoint failing under the breaker's threshold has its state
// exported as 0 (closed), as docs/webhooks.md says: the series used to be
// written only on a transition, so such an endpoint had none, which the
// docs call healthy.
func TestBreakerStateIsClosedWhileFailingUnderTheThreshold(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	e := r.endpoint(srv.URL)
	reg := prometheus.NewRegistry()
	r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg,
		Breaker: webhooks.BreakerOptions{Failures: 5, CoolDown: time.Minute}})
	for range 3 {
		r.call()
	}
	wait.For(t, 10*time.Second, "three failed attempts", func() bool {
		return r.count(e.ID, func(d webhooks.Delivery) bool { return d.Attempts == 1 }) == 3
	})
	if s := labeled(t, reg, "callsig_webhook_breaker_state", e.ID); s != webhooks.BreakerClosed {
		t.Fatalf("breaker state of an endpoint with 3 failures in a row: %v (-1: no series), want 0", s)
	}
}

// unavailableFor is a receiver that answers every request 503 with
// Retry-After: seconds (after hold, when set), and counts them.
func unavailableFor(t *testing.T, seconds string, hold func()) (*httptest.Server, *atomic.Int32) {
	return countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		if hold != nil {
			hold()
		}
		w.Header().Set("Retry-After", seconds)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
}

// heldBack makes one more call and checks that the failing endpoint got
// nothing of it: the healthy endpoint's delivery of the same call (its
// nth) is the marker that the dispatcher looked; hits must still
// be want.
func heldBack(t *testing.T, r *rig, healthy *webhooks.Endpoint, n int, hits *atomic.Int32, want int32) {
	t.Helper()
	r.call()
	wait.For(t, 10*time.Second, fmt.Sprintf("the healthy endpoint's delivery %d", n), func() bool {
		return r.count(healthy.ID, delivered) == n
	})
	if got := hits.Load(); got != want {
		t.Fatalf("%d attempts to the failing endpoint, want %d: a delivery went out while its breaker should be open", got, want)
	}
}

// A receiver that answers 503 with Retry-After is left alone that long by
// its breaker, not probed at the end of a shorter cool-down: the probe
// would spend an attempt of a delivery on an answer it already gave.
func TestDispatcherBreakerHonoursRetryAfter(t *testing.T) {
	r := newRig(t)
	srv, hits := unavailableFor(t, "300", nil)
	okSrv, _ := countingServer(t, nil)
	failing, healthy := r.endpoint(srv.URL), r.endpoint(okSrv.URL)
	reg := prometheus.NewRegistry()
	r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg,
		Breaker: webhooks.BreakerOptions{Failures: 1, CoolDown: time.Minute, MaxCoolDown: 10 * time.Minute}})

	r.call()
	wait.For(t, 10*time.Second, "the breaker to open", func() bool {
		return labeled(t, reg, "callsig_webhook_breaker_state", failing.ID) == webhooks.BreakerOpen
	})
	// Past the cool-down, within the Retry-After: a new delivery, due at
	// once, is not sent as a probe; the healthy endpoint's delivery of the
	// same call is the marker that the dispatcher looked.
	r.clock.Advance(2 * time.Minute)
	heldBack(t, r, healthy, 2, hits, 1)
	r.clock.Advance(4 * time.Minute) // past the Retry-After: one probe
	wait.For(t, 10*time.Second, "the probe after the Retry-After", func() bool { return hits.Load() >= 2 })
}

// staleSchedule hands the dispatcher a schedule read while an attempt was
// in flight, and only once that attempt's outcome is written (and a moment
// more, for the dispatcher to count it ended): the order a busy process
// can give a drain's last read and a worker's record.
type staleSchedule struct {
	webhooks.Store
	inFlight <-chan struct{} // closed once the attempt is at the receiver
	read     chan struct{}   // closed once the stale schedule is read
	recorded chan struct{}   // closed once an outcome is written
	once     sync.Once
	armed    atomic.Bool
}

func (s *staleSchedule) NextWebhookDue(ctx context.Context, now int64) (webhooks.Due, error) {
	due, err := s.Store.NextWebhookDue(ctx, now)
	select {
	case <-s.inFlight:
	default:
		return due, err
	}
	if !s.armed.CompareAndSwap(false, true) {
		return due, err
	}
	close(s.read)
	<-s.recorded
	time.Sleep(50 * time.Millisecond)
	return due, err
}

func (s *staleSchedule) FinishWebhookAttempts(ctx context.Context, o []webhooks.Outcome) ([]bool, error) {
	lost, err := s.Store.FinishWebhookAttempts(ctx, o)
	s.once.Do(func() { close(s.recorded) })
	return lost, err
}

// A breaker tripped by an attempt whose outcome was written while the
// dispatcher read its schedule is kept: that schedule showed the
// endpoint's delivery leased, not waiting, and the breaker was forgotten
// as soon as it tripped (the next delivery went out at once).
func TestDispatcherKeepsABreakerTrippedWhileTheScheduleWasRead(t *testing.T) {
	r := newRig(t)
	inFlight := make(chan struct{})
	var once sync.Once
	store := &staleSchedule{Store: r.store, inFlight: inFlight, read: make(chan struct{}), recorded: make(chan struct{})}
	srv, hits := unavailableFor(t, "0", func() {
		once.Do(func() { close(inFlight) })
		<-store.read // the dispatcher has read its schedule
	})
	okSrv, _ := countingServer(t, nil)
	failing, healthy := r.endpoint(srv.URL), r.endpoint(okSrv.URL)
	reg := prometheus.NewRegistry()
	r.dispatcherOn(store, webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg,
		Breaker: webhooks.BreakerOptions{Failures: 1, CoolDown: time.Minute}}, nil)
	r.call()
	wait.For(t, 10*time.Second, "the first attempt recorded", func() bool {
		return r.count(failing.ID, func(d webhooks.Delivery) bool { return d.Attempts == 1 }) == 1
	})
	wait.For(t, 10*time.Second, "the stale schedule handed over", func() bool { return store.armed.Load() })
	// Within the cool-down: a new delivery, due at once, waits; the
	// healthy endpoint's delivery of the same call is the marker.
	r.clock.Advance(10 * time.Second)
	heldBack(t, r, healthy, 2, hits, 1)
}

// A breaker opened by its delivery's last attempt, which leaves its
// endpoint nothing waiting, stays open for the receiver's Retry-After: the
// next delivery waits too, rather than finding the breaker forgotten.
func TestDispatcherKeepsAnOpenBreakerWithNothingWaiting(t *testing.T) {
	r := newRig(t)
	srv, hits := unavailableFor(t, "600", nil)
	okSrv, _ := countingServer(t, nil)
	failing, healthy := r.endpoint(srv.URL), r.endpoint(okSrv.URL)
	reg := prometheus.NewRegistry()
	last := len(webhooks.Schedule)
	r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg,
		Breaker: webhooks.BreakerOptions{Failures: last, CoolDown: time.Minute, MaxCoolDown: 10 * time.Minute}})
	r.call()
	for n := 1; n <= last; n++ {
		wait.For(t, 10*time.Second, fmt.Sprintf("attempt %d recorded", n), func() bool {
			return r.count(failing.ID, func(d webhooks.Delivery) bool { return d.Attempts == n }) == 1
		})
		if n < last {
			r.clock.Advance(11 * time.Hour) // past the schedule's next step
		}
	}
	wait.For(t, 10*time.Second, "the delivery failed and the breaker open", func() bool {
		return r.count(failing.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryFailed }) == 1 &&
			labeled(t, reg, "callsig_webhook_breaker_state", failing.ID) == webhooks.BreakerOpen
	})
	// Within the Retry-After: the next delivery waits; the healthy
	// endpoint's delivery of the same call is the marker.
	r.clock.Advance(2 * time.Minute)
	heldBack(t, r, healthy, 2, hits, int32(last))
}
