package webhooks

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
)

// Defaults of the Dispatcher.
const (
	// DefaultWorkers bounds the attempts in flight over all endpoints: a
	// goroutine and an outgoing connection each. Eight endpoints' shares.
	DefaultWorkers = 256
	// DefaultShare bounds the attempts in flight to one endpoint, so a slow
	// or hanging receiver holds at most its share of the workers, never
	// all of them, and a receiver is not flooded either. It is also what
	// bounds one endpoint's rate: at most the share over the time one
	// attempt takes. With 4, a receiver 20 ms away took 175 deliveries/s
	// (BenchmarkWebhookDrain), less than one busy node's events; with 32,
	// 1,200/s.
	DefaultShare = 32
	// reserveDivisor sets the workers kept for first attempts (a quarter):
	// an endpoint with an attempt in flight takes another only while more
	// are free, so that more hanging endpoints than Workers/Share cannot
	// hold every worker until their breakers open (Claim.Reserve).
	reserveDivisor = 4
	// DefaultLease is how long a claimed delivery stays claimed without an
	// outcome: well beyond one attempt's timeout, so a delivery is never
	// sent twice at the same time, and short enough that a crash mid-attempt
	// delays it by minutes, not hours.
	DefaultLease = 2 * time.Minute
	// storeRetry is how soon the dispatcher tries again after the store
	// failed it.
	storeRetry = time.Second
	// maxTimerWait bounds how long the dispatcher sleeps without reading
	// what is due (see setTimer).
	maxTimerWait = time.Minute
)

// DispatcherOptions configures NewDispatcher; zero fields get defaults.
type DispatcherOptions struct {
	Clock    calls.Clock           // default: the system clock
	Client   *http.Client          // default: NewClient(ClientOptions{})
	Logger   *slog.Logger          // default: discard
	Registry prometheus.Registerer // nil: no metrics exported
	Workers  int                   // attempts in flight at most (default DefaultWorkers)
	Share    int                   // attempts in flight per endpoint at most (default DefaultShare)
	Breaker  BreakerOptions
	Lease    time.Duration // default DefaultLease
	Jitter   Jitter        // default TenPercent
	// UserAgent is sent with every delivery.
	UserAgent string
	// Poll, when set, is how often the dispatcher reads when a delivery
	// is next due, and wakes by then if it would not already (0: it
	// knows only what its own commits, attempts and timer tell it). Another process's work wakes no one here: in a cluster,
	// what a node stopped during an attempt released, the attempts of a
	// node that died once their leases lapse, and the retries it had
	// scheduled, were sent only when a survivor happened to commit a
	// webhook of its own (a review: none within 90 s of a kill).
	Poll time.Duration
}

// Dispatcher drains the webhook outbox: it claims due deliveries, sends
// each signed with its endpoint's secret by up to Workers goroutines, at
// most Share of them to any one endpoint, and records the outcome
// (delivered, retry later, failed, endpoint gone). An endpoint that keeps
// failing trips its circuit breaker (breaker.go). The dispatcher wakes when
// told a commit queued deliveries (Committed, Wake), when an attempt ends,
// and on a timer set to the next due delivery, read from the store, so
// retries survive restarts.
type Dispatcher struct {
	store     Store
	clock     calls.Clock
	client    *http.Client
	log       *slog.Logger
	metrics   *metrics
	workers   int
	share     int
	reserve   int // workers kept for endpoints with none in flight
	breakerO  BreakerOptions
	lease     time.Duration
	jitter    Jitter
	userAgent string
	maxWait   time.Duration // maxTimerWait, but in tests
	poll      time.Duration // DispatcherOptions.Poll

	wake chan struct{} // buffered(1): "look at the outbox again"

	mu          sync.Mutex
	inflight    map[int64]int64 // deliveries being sent by this process → their lease
	perEndpoint map[string]int  // attempts at the receiver per endpoint (its share's use)
	// unrecorded counts per endpoint the attempts started and not yet
	// recorded: those at the receiver, and those answered whose outcome
	// is being written (see deliver).
	unrecorded map[string]int
	// ends counts the attempts that ended (their outcome written, or
	// given up); endedAt is its value at each endpoint's latest. A
	// schedule (NextWebhookDue) read after ends was n shows what every
	// attempt counted up to n wrote, and maybe more (see nextWake).
	ends     uint64
	endedAt  map[string]uint64
	breakers map[string]*breaker
	timer    calls.Timer
	timerAt  int64 // Unix ms the timer fires at, 0 when none
	running  bool
	claiming chan struct{} // open while a claim runs (lease.go)

	// outcomes carries the answered attempts' outcomes to the recorder
	// (recorder.go); made by Run before any attempt starts.
	outcomes chan pendingOutcome
}

var _ calls.Notifier = (*Dispatcher)(nil)

// NewDispatcher returns a dispatcher over store; Run runs it.
func NewDispatcher(store Store, o DispatcherOptions) (*Dispatcher, error) {
	if o.Clock == nil {
		o.Clock = calls.SystemClock{}
	}
	if o.Client == nil {
		o.Client = NewClient(ClientOptions{})
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Share <= 0 {
		o.Share = DefaultShare
	}
	o.Share = min(o.Share, o.Workers)
	o.Breaker.defaults()
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.Jitter == nil {
		o.Jitter = TenPercent
	}
	if o.UserAgent == "" {
		o.UserAgent = "callsig-webhooks/1"
	}
	m, err := newMetrics(o.Registry, store, o.Clock)
	if err != nil {
		return nil, err
	}
	return &Dispatcher{
		store: store, clock: o.Clock, client: o.Client, log: o.Logger, metrics: m,
		workers: o.Workers, share: o.Share, reserve: o.Workers / reserveDivisor, breakerO: o.Breaker, lease: o.Lease, jitter: o.Jitter, maxWait: maxTimerWait, poll: o.Poll,
		userAgent: o.UserAgent, wake: make(chan struct{}, 1),
		inflight: map[int64]int64{}, perEndpoint: map[string]int{}, unrecorded: map[string]int{}, endedAt: map[string]uint64{}, breakers: map[string]*breaker{},
	}, nil
}

// Committed wakes the dispatcher when a commit queued webhook messages. It
// never blocks (calls.Notifier).
func (d *Dispatcher) Committed(_ []calls.Event, hooks int) {
	if hooks > 0 {
		d.Wake()
	}
}

// Wake makes the dispatcher look at the outbox again. It never blocks; one
// pending wake-up covers any number of calls.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run drains the outbox until ctx is done, then waits for the attempts in
// flight to stop and returns nil. An attempt cut short by the stop is
// released to be sent again (same webhook-id) by the next run.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.running {
		d.mu.Unlock()
		return errors.New("webhooks: dispatcher already running")
	}
	d.running = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running = false
		d.mu.Unlock()
	}()

	// The recorder outlives every attempt: it stops once the workers'
	// wait (deferred after it, so run before it) is over.
	d.outcomes = make(chan pendingOutcome, d.workers)
	var recorders sync.WaitGroup
	for range outcomeWriters {
		recorders.Go(func() { d.recordOutcomes(d.outcomes) })
	}
	defer func() {
		close(d.outcomes)
		recorders.Wait()
	}()
	var workers sync.WaitGroup
	defer workers.Wait()
	defer d.setTimer(0)
	var poll <-chan time.Time
	if d.poll > 0 {
		t := time.NewTicker(d.poll)
		defer t.Stop()
		poll = t.C
	}
	d.Wake() // deliveries left pending by a previous run
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
			d.drain(ctx, &workers)
		case <-poll:
			d.look(ctx)
		}
	}
}

// look reads when a delivery is next due and has the dispatcher wake by
// then, unless it wakes sooner already (see Poll): what another process
// did wakes no one here. One read, the one a drain ends with; the claim,
// a write transaction on PostgreSQL, only once something is due.
func (d *Dispatcher) look(ctx context.Context) {
	now := d.clock.Now().UnixMilli()
	ends := d.endsSoFar()
	due, err := d.store.NextWebhookDue(ctx, now)
	if err != nil {
		return // the next poll, or a drain, reads it again
	}
	next := d.nextWake(due, now, ends)
	d.mu.Lock()
	armed := d.timerAt
	d.mu.Unlock()
	if next != 0 && (armed == 0 || next < armed) {
		d.setTimer(next)
	}
}

// drain starts attempts for due deliveries while workers and shares are
// free, then arms the timer for the next delivery that can be sent.
func (d *Dispatcher) drain(ctx context.Context, workers *sync.WaitGroup) {
	took := 0           // attempts this drain started
	var claimedAt int64 // Unix ms of its last claim
	for ctx.Err() == nil {
		now := d.clock.Now()
		c := d.claim(now)
		claimedAt = c.Now
		if c.Limit <= 0 {
			// Every worker busy: a finishing attempt wakes the loop. A
			// lease in flight that ran out is renewed meanwhile, once a
			// wake (the claim takes nothing else); one that cannot be
			// (another process took the delivery over) stays run out
			// until its attempt ends, and must not make each wake claim
			// again at once.
			if c.LeaseRunOut() {
				if _, err := d.claimDeliveries(ctx, c); err != nil && ctx.Err() == nil {
					d.log.Error("webhooks: renew leases", "err", err)
					d.setTimer(now.Add(storeRetry).UnixMilli())
					return
				}
			}
			// Wake again when a lease in flight runs out (a later jump or
			// pause), or within maxWait: the next renewal is this loop's.
			d.setTimer(d.nextLeaseEnd(now.UnixMilli()))
			return
		}
		claimed, err := d.claimDeliveries(ctx, c)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("webhooks: claim deliveries", "err", err)
				d.setTimer(now.Add(storeRetry).UnixMilli())
			}
			return
		}
		for _, a := range claimed.Attempts {
			d.mu.Lock()
			// The claim skips what is in flight; this guards the map's
			// invariant should a store not.
			_, dup := d.inflight[a.DeliveryID]
			if !dup {
				d.inflight[a.DeliveryID] = a.Lease
				d.perEndpoint[a.EndpointID]++
				d.unrecorded[a.EndpointID]++
			}
			d.mu.Unlock()
			if dup {
				continue
			}
			workers.Add(1)
			took++
			go d.deliver(ctx, workers, a)
		}
		if !claimed.More {
			break
		}
	}
	if ctx.Err() != nil {
		return
	}
	now := d.clock.Now().UnixMilli()
	ends := d.endsSoFar()
	due, err := d.store.NextWebhookDue(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("webhooks: next due delivery", "err", err)
			d.setTimer(now + storeRetry.Milliseconds())
		}
		return
	}
	next := d.nextWake(due, now, ends)
	if took == 0 && next != 0 && next <= claimedAt {
		// Due when the claim ran, yet it took nothing: what is due cannot
		// be claimed here (a delivery in flight here whose lease another
		// process took and let go, or one another node is claiming at
		// this moment). Woken at once, the loop claimed nothing again and
		// again until that changed (875 claims in 300 ms); a commit or a
		// finishing attempt still wakes it at once. (Due only since the
		// claim, it is claimed at once.)
		next = now + storeRetry.Milliseconds()
	}
	d.setTimer(next)
}

// claim describes what may be claimed at now: the free workers, and for
// each endpoint with attempts in flight or a breaker not closed, its free
// share.
func (d *Dispatcher) claim(now time.Time) Claim {
	ms := now.UnixMilli()
	d.mu.Lock()
	defer d.mu.Unlock()
	c := Claim{
		Now: ms, LeaseUntil: now.Add(d.lease).UnixMilli(), Limit: d.workers - len(d.inflight),
		Share: d.share, Free: map[string]int{}, InFlight: make(map[int64]int64, len(d.inflight)),
		Reserve: d.reserve, Sending: make(map[string]int, len(d.perEndpoint)),
	}
	for id, lease := range d.inflight {
		c.InFlight[id] = lease
	}
	for id := range d.unrecorded { // every endpoint with an attempt not recorded
		c.Free[id] = d.free(id, d.share)
		if n := d.perEndpoint[id]; n > 0 {
			c.Sending[id] = n
		}
	}
	for id, b := range d.breakers {
		slots, tr := b.slots(ms, d.share)
		d.report(id, tr)
		c.Free[id] = d.free(id, slots)
	}
	return c
}

// free is how many more attempts an endpoint may start with slots at the
// receiver: those of its slots no attempt uses, but no more than leave it
// twice its share of attempts not yet recorded. An answered attempt frees
// its slot before its outcome is written (deliver), and while the store
// is slow a fast endpoint would otherwise fill every worker with outcomes
// waiting to be written. d.mu is held.
func (d *Dispatcher) free(endpointID string, slots int) int {
	return max(min(slots-d.perEndpoint[endpointID], 2*d.share-d.unrecorded[endpointID]), 0)
}

// nextLeaseEnd returns the earliest end after now of the leases in flight
// here, or now+maxWait when none ends later (one taken over by another
// process stays run out until its attempt ends, and must not wake the loop
// at once again and again).
func (d *Dispatcher) nextLeaseEnd(now int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := now + d.maxWait.Milliseconds()
	for _, lease := range d.inflight {
		if lease > now && lease < next {
			next = lease
		}
	}
	return next
}

// endsSoFar is d.ends, read before a schedule is (see nextWake).
func (d *Dispatcher) endsSoFar() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ends
}

// nextWake returns when the dispatcher must look again (Unix ms, 0: only
// when woken): the earliest due time of an endpoint that has a free share
// (an endpoint at its share, or with an attempt in flight while only the
// reserve is free, is woken for by a finishing attempt), put
// off to the end of its cool-down while its breaker is open, or the end
// of a lease, whichever comes first.
func (d *Dispatcher) nextWake(due Due, now int64, ends uint64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A breaker is kept while its endpoint has deliveries waiting or in
	// flight: one deleted (or disabled) has none left, and its breaker
	// and metric series would otherwise stay for as long as the process
	// lives, however many endpoints are created and deleted. A live
	// endpoint whose backlog emptied learns its state again if it fails.
	// Not when one of its attempts ended after due was read (ends, the
	// count before): due may show that attempt's delivery leased, not
	// waiting, and the breaker it just tripped was forgotten at once.
	// Nor while it is open: the failure that opened it may have been its
	// delivery's last attempt, the receiver's Retry-After still running
	// for the next delivery (the open period ends within MaxCoolDown).
	for id, b := range d.breakers {
		if b.state == BreakerOpen && b.openUntil > now {
			continue
		}
		if _, waiting := due.Endpoints[id]; !waiting && d.unrecorded[id] == 0 && d.endedAt[id] <= ends {
			d.forgetBreaker(id)
		}
	}
	for id, at := range d.endedAt {
		if at <= ends && d.breakers[id] == nil {
			delete(d.endedAt, id)
		}
	}
	next := due.LeaseEnd
	for id, at := range due.Endpoints {
		slots := d.share
		if b := d.breakers[id]; b != nil {
			switch b.state {
			case BreakerOpen:
				at, slots = max(at, b.openUntil), 1
			case BreakerHalfOpen:
				slots = 1
			}
		}
		if d.free(id, slots) == 0 || d.perEndpoint[id] > 0 && d.workers-len(d.inflight) <= d.reserve {
			continue // woken for by a finishing attempt
		}
		if next == 0 || at < next {
			next = at
		}
	}
	return next
}

// setTimer makes the dispatcher wake at Unix ms at (0: no timer). A time
// already past (the clock moved while draining) wakes it at once.
func (d *Dispatcher) setTimer(at int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now().UnixMilli()
	if at != 0 && at <= now {
		at = 0
		d.Wake()
	}
	if at > now+d.maxWait.Milliseconds() {
		// A timer counts elapsed time, not the wall clock's: after the
		// clock stepped forward (NTP, a VM resumed) a retry an hour away
		// would be an hour late. Looking again every maxTimerWait bounds
		// that to a minute.
		at = now + d.maxWait.Milliseconds()
	}
	if at == d.timerAt {
		return
	}
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.timerAt = at
	if at != 0 {
		// TimerAt: a fake clock moved by a test between reading now and
		// setting the timer made it fire a jump late (a retry never sent).
		d.timer = calls.TimerAt(d.clock, at, func() {
			d.mu.Lock()
			if d.timerAt == at {
				d.timerAt, d.timer = 0, nil
			}
			d.mu.Unlock()
			d.Wake()
		})
	}
}

// deliver runs one attempt, records its outcome and feeds its endpoint's
// breaker.
//
// The endpoint's share counts requests at the receiver: an answered
// attempt gives its slot back at once, breaker fed, while its outcome is
// still being recorded. Recording waits for a commit (9 ms on a loaded
// node), and a slot held through it sent nothing meanwhile: one loaded
// node drained an all-events endpoint at a fraction of the rate its
// events came in (docs/benchmarks.md). The delivery stays leased until
// the outcome is recorded, so no claim takes it again meanwhile, and the
// worker (a goroutine) stays taken. An answer that disables the endpoint
// (410) keeps its slot until that is recorded, so that no other attempt
// goes to an endpoint being disabled.
func (d *Dispatcher) deliver(ctx context.Context, workers *sync.WaitGroup, a Attempt) {
	defer workers.Done()
	answered := false
	defer func() {
		d.mu.Lock()
		delete(d.inflight, a.DeliveryID)
		if !answered {
			d.releaseShare(a.EndpointID)
		}
		if d.unrecorded[a.EndpointID]--; d.unrecorded[a.EndpointID] <= 0 {
			delete(d.unrecorded, a.EndpointID)
		}
		d.ends++
		d.endedAt[a.EndpointID] = d.ends
		d.mu.Unlock()
		d.Wake()
	}()
	o, failed, abandoned := d.attempt(ctx, a)
	if !abandoned && o.DisableReason == "" {
		d.mu.Lock()
		d.releaseShare(a.EndpointID)
		d.feedBreaker(a.EndpointID, failed, o.At, o.quietUntil)
		answered = true
		d.mu.Unlock()
		d.Wake()
	}
	// Recording must outlive ctx: the outcome of a finished attempt is
	// worth keeping even while shutting down (the store closes after us).
	rec, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if abandoned {
		err := d.record(a.DeliveryID, func(lease int64) error {
			return d.store.ReleaseWebhookDelivery(rec, a.DeliveryID, lease)
		})
		if errors.Is(err, ErrLeaseLost) {
			d.leaseLost(a, "release")
		} else if err != nil {
			d.log.Error("webhooks: release delivery", "delivery", a.DeliveryID, "err", err)
		}
		return
	}
	err := d.record(a.DeliveryID, func(lease int64) error {
		o.Lease = lease
		return d.finish(o)
	})
	if errors.Is(err, ErrLeaseLost) {
		d.leaseLost(a, "outcome")
	} else if err != nil {
		d.log.Error("webhooks: record delivery attempt", "delivery", a.DeliveryID, "err", err)
	}
	if o.DisableReason != "" {
		d.mu.Lock()
		d.forgetBreaker(a.EndpointID)
		d.mu.Unlock()
	}
}

// releaseShare ends one attempt's hold on its endpoint's share; d.mu is
// held.
func (d *Dispatcher) releaseShare(endpointID string) {
	if d.perEndpoint[endpointID]--; d.perEndpoint[endpointID] <= 0 {
		delete(d.perEndpoint, endpointID)
	}
}

// feedBreaker records an answered attempt in its endpoint's breaker
// (quietUntil: when its Retry-After, if any, ends); d.mu is held.
func (d *Dispatcher) feedBreaker(endpointID string, failed bool, at, quietUntil int64) {
	b := d.breakers[endpointID]
	if b == nil {
		if !failed {
			return
		}
		b = &breaker{}
		d.breakers[endpointID] = b
		// Failing, under the threshold: a series from the first failure,
		// as docs/webhooks.md says (absent means healthy).
		d.metrics.breakerState.WithLabelValues(endpointID).Set(float64(BreakerClosed))
	}
	d.report(endpointID, b.record(failed, at, d.breakerO, quietUntil))
	if b.state == BreakerClosed && b.failures == 0 {
		// A closed, healthy breaker is the default, kept by nobody: its
		// series go with it, or an endpoint that tripped, recovered and
		// was deleted left them for as long as the process lives.
		d.forgetBreaker(endpointID)
	}
}

// forgetBreaker drops an endpoint's breaker and its metric series; d.mu
// is held.
func (d *Dispatcher) forgetBreaker(endpointID string) {
	delete(d.breakers, endpointID)
	d.metrics.breakerState.DeleteLabelValues(endpointID)
	d.metrics.breakerTrips.DeleteLabelValues(endpointID)
}

// report logs and exports a breaker transition; d.mu is held.
func (d *Dispatcher) report(endpointID string, tr *transition) {
	if tr == nil {
		return
	}
	d.metrics.breakerState.WithLabelValues(endpointID).Set(float64(tr.to))
	log := d.log.With("webhook", endpointID)
	switch tr.to {
	case BreakerOpen:
		d.metrics.breakerTrips.WithLabelValues(endpointID).Inc()
		log.Warn("webhook endpoint keeps failing; circuit breaker open, its deliveries wait",
			"failures", tr.failures, "until", time.UnixMilli(tr.until).UTC().Format(time.RFC3339))
	case BreakerHalfOpen:
		log.Info("webhook circuit breaker half-open; sending one probe")
	case BreakerClosed:
		log.Info("webhook endpoint answers again; circuit breaker closed")
	}
}
