package webhooks_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"callsig/calls"
	"callsig/db/sqlite"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
	"callsig/webhooks"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// rig is a store, a fake clock and a call service producing webhook
// messages, with dispatchers started on demand.
type rig struct {
	t     *testing.T
	store *sqlite.Store
	clock *fakeclock.Clock
	svc   *calls.Service
	wake  notifierFunc
}

type notifierFunc struct{ fns *[]func() }

func (n notifierFunc) Committed(_ []calls.Event, hooks int) {
	if hooks > 0 {
		for _, f := range *n.fns {
			f()
		}
	}
}

func newRig(t *testing.T) *rig {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "callsig.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{t: t, store: st, clock: fakeclock.New(epoch), wake: notifierFunc{fns: new([]func())}}
	r.svc = calls.NewService(calls.Options{Store: st, Clock: r.clock, Notifier: r.wake})
	return r
}

// endpoint registers url for call.created only, so each call is one
// delivery.
func (r *rig) endpoint(url string) *webhooks.Endpoint {
	r.t.Helper()
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	e, err := reg.Create(context.Background(), webhooks.CreateInput{URL: url, EventTypes: []calls.HookType{calls.HookCallCreated}})
	if err != nil {
		r.t.Fatal(err)
	}
	return e
}

// dispatcher starts a dispatcher; it stops when the test ends (or stop).
func (r *rig) dispatcher(o webhooks.DispatcherOptions) (d *webhooks.Dispatcher, stop func()) {
	r.t.Helper()
	o.Clock = r.clock
	return r.dispatcherOn(r.store, o, nil)
}

// dispatcherOn is dispatcher over store (r.store, seen through a test's
// wrapper), with o's clock (r.clock when nil); prepare, when set, is
// called before it runs.
func (r *rig) dispatcherOn(store webhooks.Store, o webhooks.DispatcherOptions, prepare func(*webhooks.Dispatcher)) (d *webhooks.Dispatcher, stop func()) {
	r.t.Helper()
	if o.Clock == nil {
		o.Clock = r.clock
	}
	if o.Client == nil {
		o.Client = webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})
	}
	d, err := webhooks.NewDispatcher(store, o)
	if err != nil {
		r.t.Fatal(err)
	}
	if prepare != nil {
		prepare(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	*r.wake.fns = append(*r.wake.fns, d.Wake)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("dispatcher run: %v", err)
			}
		})
	}
	r.t.Cleanup(stop)
	return d, stop
}

func (r *rig) call() {
	r.t.Helper()
	if _, err := r.svc.Invite(context.Background(), calls.Actor{UserID: "alice", Device: "d"}, calls.InviteInput{Invitees: []string{"bob"}}); err != nil {
		r.t.Fatal(err)
	}
}

// waitDelivery polls the endpoint's only delivery until match holds.
func (r *rig) waitDelivery(endpointID string, match func(webhooks.Delivery) bool) webhooks.Delivery {
	r.t.Helper()
	var l []webhooks.Delivery
	matched := wait.Until(10*time.Second, func() bool {
		var err error
		if l, err = r.store.WebhookDeliveries(context.Background(), endpointID, webhooks.DeliveryQuery{}); err != nil {
			r.t.Fatal(err)
		}
		return len(l) == 1 && match(l[0])
	})
	if !matched {
		r.t.Fatalf("deliveries %+v", l)
	}
	return l[0]
}

func attempts(n int, status webhooks.DeliveryStatus) func(webhooks.Delivery) bool {
	return func(d webhooks.Delivery) bool { return d.Attempts == n && d.Status == status }
}

// With jitter injected away the schedule is exact, and the outcome
// metrics count each attempt.
func TestDispatcherRetryScheduleWithoutJitter(t *testing.T) {
	r := newRig(t)
	var hits atomic.Int32
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("upstream down\n\tretry later"))
		}
	})
	e := r.endpoint(srv.URL)
	reg := prometheus.NewRegistry()
	r.dispatcher(webhooks.DispatcherOptions{Jitter: webhooks.NoJitter, Registry: reg})

	r.call()
	d := r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
	if d.NextAttemptAt != epoch.Add(5*time.Second).UnixMilli() || d.LastError != "unexpected status 502: upstream down retry later" {
		t.Fatalf("after one failure %+v", d)
	}
	if n := gauge(t, reg, "callsig_webhook_queue_depth"); n != 1 {
		t.Fatalf("queue depth %v", n)
	}
	r.clock.Advance(5 * time.Second)
	d = r.waitDelivery(e.ID, attempts(2, webhooks.DeliveryPending))
	if d.NextAttemptAt != epoch.Add(5*time.Second+5*time.Minute).UnixMilli() {
		t.Fatalf("after two failures %+v", d)
	}
	r.clock.Advance(time.Minute)
	if age := gauge(t, reg, "callsig_webhook_oldest_pending_age_seconds"); age != 65 {
		t.Fatalf("oldest pending age %v, want 65", age)
	}
	r.clock.Advance(4 * time.Minute)
	r.waitDelivery(e.ID, attempts(3, webhooks.DeliveryDelivered))

	if got := gauge(t, reg, "callsig_webhook_queue_depth"); got != 0 {
		t.Fatalf("queue depth after delivery %v", got)
	}
	if got := gauge(t, reg, "callsig_webhook_oldest_pending_age_seconds"); got != 0 {
		t.Fatalf("oldest pending age after delivery %v", got)
	}
	for outcome, want := range map[string]float64{"delivered": 1, "retry": 2, "failed": 0, "gone": 0} {
		if got := counter(t, reg, "callsig_webhook_deliveries_total", outcome); got != want {
			t.Errorf("outcome %s counted %v times, want %v", outcome, got, want)
		}
	}
	if n := histogramCount(t, reg, "callsig_webhook_attempt_duration_seconds"); n != 3 {
		t.Fatalf("latency observed %d times, want 3", n)
	}
}

// family returns the gathered metric family called name.
func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func counter(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	for _, m := range family(t, reg, name).GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "outcome" && l.GetValue() == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	return family(t, reg, name).GetMetric()[0].GetHistogram().GetSampleCount()
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return family(t, reg, name).GetMetric()[0].GetGauge().GetValue()
}

// An attempt that gets no answer in time is a failure, retried later.
func TestDispatcherTimesOutSlowReceivers(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, req *http.Request) {
		<-req.Context().Done()
	})
	e := r.endpoint(srv.URL)
	r.dispatcher(webhooks.DispatcherOptions{Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true, Timeout: 100 * time.Millisecond})})
	r.call()
	d := r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
	if d.LastStatusCode != 0 || !strings.Contains(d.LastError, "timed out") {
		t.Fatalf("timed-out attempt %+v", d)
	}
}

// A receiver's answer is read only so far, whatever it sends.
func TestDispatcherReadsBoundedAnswers(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		chunk := []byte(strings.Repeat("x", 1<<10))
		for range 64 << 10 { // 64 MiB unless the client hangs up
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	e := r.endpoint(srv.URL)
	r.dispatcher(webhooks.DispatcherOptions{})
	r.call()
	d := r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
	if d.LastStatusCode != http.StatusInternalServerError || len(d.LastError) > 300 {
		t.Fatalf("attempt record: status %d, error of %d bytes", d.LastStatusCode, len(d.LastError))
	}
}

// The lease keeps a delivery from being sent twice at once even by two
// dispatchers on one database (a restarted process while the old one is
// still finishing, or several nodes); an attempt abandoned at shutdown is
// released and sent again, with the same webhook-id, by the other.
func TestDispatcherLeaseAcrossDispatchers(t *testing.T) {
	r := newRig(t)
	var mu sync.Mutex
	var ids []string
	inflight, maxInflight := 0, 0
	hold := make(chan struct{})
	srv, _ := countingServer(t, func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		ids = append(ids, req.Header.Get("webhook-id"))
		inflight++
		maxInflight = max(maxInflight, inflight)
		first := len(ids) == 1
		mu.Unlock()
		defer func() { mu.Lock(); inflight--; mu.Unlock() }()
		if first {
			select { // the first attempt hangs until its dispatcher stops
			case <-hold:
			case <-req.Context().Done():
			}
		}
	})
	e := r.endpoint(srv.URL)
	_, stop1 := r.dispatcher(webhooks.DispatcherOptions{})
	r.call()
	wait.For(t, 10*time.Second, "one attempt in flight", func() bool { mu.Lock(); defer mu.Unlock(); return inflight == 1 })

	d2, _ := r.dispatcher(webhooks.DispatcherOptions{})
	d2.Wake()
	r.clock.Advance(time.Minute) // within the lease
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if len(ids) != 1 {
		t.Fatalf("the second dispatcher sent a leased delivery: %v", ids)
	}
	mu.Unlock()

	stop1() // abandons the attempt and releases the lease
	d2.Wake()
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] != ids[1] || maxInflight != 1 {
		t.Fatalf("webhook-ids %v, at most %d at once", ids, maxInflight)
	}
	close(hold)
}

// jumpClock is the system clock stepped forward by off, with real timers:
// what a wall clock set forward by NTP, or a VM resumed, looks like to a
// process.
type jumpClock struct{ off atomic.Int64 }

func (c *jumpClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *jumpClock) AfterFunc(d time.Duration, f func()) calls.Timer {
	return time.AfterFunc(d, f)
}

// A retry due in an hour, whose time the wall clock then jumps past, is
// sent once the dispatcher looks again (every maxTimerWait, shortened
// here), not an hour of elapsed time later: its timer counts the elapsed
// time, which no jump shortens.
func TestRetryAfterAClockJumpIsNotAnHourLate(t *testing.T) {
	r := newRig(t)
	var hits atomic.Int32
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		if hits.Add(1) == 1 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	e := r.endpoint(srv.URL)
	clock := &jumpClock{}
	r.dispatcherOn(r.store, webhooks.DispatcherOptions{Clock: clock},
		func(d *webhooks.Dispatcher) { d.SetMaxWait(200 * time.Millisecond) })
	r.call()
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
	clock.off.Store(int64(time.Hour + time.Minute))
	r.waitDelivery(e.ID, attempts(2, webhooks.DeliveryDelivered))
}

// slowOutcomes is a store whose outcomes are held until release is
// closed: an attempt answered, its commit still to come.
type slowOutcomes struct {
	webhooks.Store
	release chan struct{}
	held    atomic.Int32
	largest atomic.Int32 // the most outcomes one call recorded
}

func (s *slowOutcomes) FinishWebhookAttempts(ctx context.Context, o []webhooks.Outcome) ([]bool, error) {
	s.held.Add(int32(len(o)))
	for m := s.largest.Load(); int32(len(o)) > m && !s.largest.CompareAndSwap(m, int32(len(o))); m = s.largest.Load() {
	}
	<-s.release
	return s.Store.FinishWebhookAttempts(ctx, o)
}

// An answered attempt gives its endpoint's share back at once, while its
// outcome is still being recorded: with a share of one, the next delivery
// is sent before the first one's outcome is written, never two at once at
// the receiver, and both are recorded delivered in the end.
func TestDispatcherFreesShareOnAnswerNotOnRecord(t *testing.T) {
	r := newRig(t)
	var now, most atomic.Int32
	srv, hits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		w.WriteHeader(http.StatusNoContent)
	})
	e := r.endpoint(srv.URL)
	store := &slowOutcomes{Store: r.store, release: make(chan struct{})}
	var once sync.Once
	free := func() { once.Do(func() { close(store.release) }) }
	r.dispatcherOn(store, webhooks.DispatcherOptions{Share: 1}, nil)
	t.Cleanup(free) // before the dispatcher's stop, which waits for the outcomes
	r.call()
	r.call()
	// The first outcome is held at the store (the second too, or waiting
	// for a write): none is recorded, yet both were sent.
	wait.For(t, 10*time.Second, "both deliveries sent, no outcome recorded yet", func() bool { return hits.Load() == 2 && store.held.Load() >= 1 })
	if m := most.Load(); m != 1 {
		t.Fatalf("%d requests at the receiver at once, more than the share of 1", m)
	}
	free()
	wait.For(t, 10*time.Second, "both recorded delivered", func() bool {
		return r.count(e.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered }) == 2
	})
}

// Outcomes that come in while the store is busy recording others are
// recorded together, in one call for all of them, not one call each.
func TestDispatcherRecordsWaitingOutcomesTogether(t *testing.T) {
	r := newRig(t)
	store := &slowOutcomes{Store: r.store, release: make(chan struct{})}
	sendHeldThenRecord(t, r, store, store.release)
	if m := store.largest.Load(); m < 2 {
		t.Fatalf("at most %d outcome per call to the store: each was recorded alone", m)
	}
}

// sendHeldThenRecord has the dispatcher send 20 deliveries over store
// while store holds their outcomes until release is closed, then waits
// until every one is recorded delivered.
func sendHeldThenRecord(t *testing.T, r *rig, store webhooks.Store, release chan struct{}) {
	t.Helper()
	srv, hits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	e := r.endpoint(srv.URL)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	r.dispatcherOn(store, webhooks.DispatcherOptions{}, nil)
	t.Cleanup(free) // before the dispatcher's stop, which waits for the outcomes
	const n = 20
	for range n {
		r.call()
	}
	// Every attempt answered; the store holds the first outcomes, the
	// rest wait for a write.
	wait.For(t, 10*time.Second, "every delivery sent", func() bool { return hits.Load() == n })
	free()
	wait.For(t, 10*time.Second, "every delivery recorded", func() bool {
		return r.count(e.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered }) == n
	})
}

// refusingBatches is slowOutcomes whose store fails every write of more
// than one outcome (as PostgreSQL aborting a batch, or one outcome the
// store refuses): refused counts those writes.
type refusingBatches struct {
	slowOutcomes
	refused atomic.Int32
}

func (s *refusingBatches) FinishWebhookAttempts(ctx context.Context, o []webhooks.Outcome) ([]bool, error) {
	<-s.release
	if len(o) > 1 {
		s.refused.Add(1)
		return nil, errors.New("batch refused")
	}
	return s.Store.FinishWebhookAttempts(ctx, o)
}

// A write of several outcomes that fails does not cost them their
// outcomes: each is written again on its own, and every delivery ends
// recorded delivered, not left leased to be sent again.
func TestDispatcherRecordsEachOutcomeOfAFailedBatchAlone(t *testing.T) {
	r := newRig(t)
	store := &refusingBatches{slowOutcomes: slowOutcomes{Store: r.store, release: make(chan struct{})}}
	sendHeldThenRecord(t, r, store, store.release)
	if store.refused.Load() == 0 {
		t.Fatal("no write of several outcomes was tried: the test proves nothing")
	}
}

// countingClaims is slowOutcomes that counts the claims made.
type countingClaims struct {
	slowOutcomes
	claims atomic.Int32
}

func (s *countingClaims) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	defer s.claims.Add(1)
	return s.Store.ClaimWebhookDeliveries(ctx, c)
}

// While its outcomes cannot be written, a fast endpoint starts at most
// twice its share of attempts, not one per worker: its answered attempts
// free their slots at the receiver, yet each holds a worker until its
// outcome is written.
func TestDispatcherBoundsAnEndpointsUnrecordedAttempts(t *testing.T) {
	r := newRig(t)
	srv, hits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	e := r.endpoint(srv.URL)
	store := &countingClaims{slowOutcomes: slowOutcomes{Store: r.store, release: make(chan struct{})}}
	var once sync.Once
	free := func() { once.Do(func() { close(store.release) }) }
	const share, n = 2, 10
	d, _ := r.dispatcherOn(store, webhooks.DispatcherOptions{Share: share}, nil)
	t.Cleanup(free)
	for range n {
		r.call()
	}
	wait.For(t, 10*time.Second, "twice the share sent", func() bool { return hits.Load() == 2*share })
	// Two more claims, after which no more was sent.
	for range 2 {
		before := store.claims.Load()
		d.Wake()
		wait.For(t, 10*time.Second, "a claim", func() bool { return store.claims.Load() > before })
	}
	if got := hits.Load(); got != 2*share {
		t.Fatalf("%d attempts started with no outcome recorded, want %d (twice the share)", got, 2*share)
	}
	free()
	wait.For(t, 10*time.Second, "every delivery recorded", func() bool {
		return r.count(e.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered }) == n
	})
}

// countingStore counts the claims (write transactions on PostgreSQL) and
// the reads of when a delivery is next due.
type countingStore struct {
	webhooks.Store
	claims, dues atomic.Int64
}

func (s *countingStore) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	s.claims.Add(1)
	return s.Store.ClaimWebhookDeliveries(ctx, c)
}

func (s *countingStore) NextWebhookDue(ctx context.Context, now int64) (webhooks.Due, error) {
	s.dues.Add(1)
	return s.Store.NextWebhookDue(ctx, now)
}

// A dispatcher with Poll reads when a delivery is next due every Poll (in
// a cluster, another node's released or lapsed attempts wake no one here),
// and claims only when something is: each poll was a whole drain, a write
// transaction on PostgreSQL (a review).
func TestPollReadsAndClaimsOnlyWhatIsDue(t *testing.T) {
	r := newRig(t)
	cs := &countingStore{Store: r.store}
	_, stop := r.dispatcherOn(cs, webhooks.DispatcherOptions{Poll: 20 * time.Millisecond}, nil)
	wait.For(t, 5*time.Second, "the first drain", func() bool { return cs.dues.Load() > 0 })
	c0, d0 := cs.claims.Load(), cs.dues.Load()
	wait.For(t, 5*time.Second, "five polls", func() bool { return cs.dues.Load() >= d0+5 })
	if c := cs.claims.Load() - c0; c > 0 {
		t.Fatalf("polls with nothing in the outbox made %d claims", c)
	}
	stop()
}

// A 410 disables the endpoint with a warning that names its host, never
// the whole URL, whose path or query may hold the receiver's secret.
func TestGoneIsLoggedWithoutTheURLsSecret(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	e := r.endpoint(srv.URL + "/hooks/s3cret-path?token=s3cret-query")
	var mu sync.Mutex
	var logs strings.Builder
	r.dispatcher(webhooks.DispatcherOptions{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	r.call()
	r.waitDelivery(e.ID, func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryFailed })
	wait.For(t, 10*time.Second, "the 410's warning", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "410 Gone")
	})
	mu.Lock()
	defer mu.Unlock()
	if out := logs.String(); strings.Contains(out, "s3cret") || !strings.Contains(out, "host="+strings.TrimPrefix(srv.URL, "http://")) {
		t.Fatalf("logs:\n%s", out)
	}
}
