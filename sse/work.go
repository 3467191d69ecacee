package sse

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
)

// work runs the hub's reports to the Service off the request path: a
// user's first stream opening or last stream closing (UserOnline,
// UserOffline) and each flushed invitation (MarkDelivered). Each is a write
// transaction, so several run at once and the store commits them together.
type work struct {
	log  *slog.Logger
	svc  Service
	wake chan struct{}

	mu sync.Mutex
	// Presence is reported per user in order, one report at a time. Each
	// transition to online is followed by a UserOnline (idempotent: it
	// tracks the calls the caller made meanwhile); an offline that was
	// already reported, or that a reconnection overtook, is not repeated.
	users       map[string]*presenceState
	queue       []string // users with a report due
	presenceOff bool     // shutting down: presence changes are not reported
	deliveries  []delivery
	// parked are the reports that failed every quick retry, tried again
	// every parkedRetry (see deliveryAttempts).
	parked      []delivery
	parkedUsers []string
	parkedGauge prometheus.Gauge // nil in tests of work alone
	// reported holds the event ids already reported as delivered, so an
	// invitation seen by several streams (devices, tabs) is reported once.
	reported map[int64]struct{}
}

type presenceState struct {
	want, applied bool // online now; online as last reported
	dirty         bool // want changed since the last report began
	queued, busy  bool
	reporting     bool // busy: the report in flight is "online"
	parked        bool // in work.parkedUsers
	failing       bool // the last report failed: one attempt a retry
	// announced: a stream's announcement (Options.Announce) may have
	// written the user's presence row since the last report began, which
	// no report accounts for yet: the next report is made even if the
	// user is offline and reported so, and its UserOffline deletes it.
	announced bool
	// offlineAt is when want last turned false: an offline report made
	// late (retried, parked) still starts the grace from then.
	offlineAt time.Time
	// notBefore: the user's next report waits until then (see pace).
	notBefore time.Time
	// episode: the user came online since the last report began. An
	// online report accounts for it; otherwise, when the user is offline
	// again before its turn, the offline is reported even if no online
	// was: the caller may have created calls while connected (tracked from
	// the start, see calls.NewCall), and without the offline their grace
	// period was never armed.
	episode bool
}

type delivery struct {
	id           int64 // the invitation event
	callID, user string
	invitedAt    int64 // the invitation event's Time (see calls.Delivered)
	parked       bool  // tried before, failed: one attempt a retry
}

// maxReported bounds the dedup set; forgetting it only costs a no-op report.
const maxReported = 8192

// deliveryTimeout bounds one delivery report.
const deliveryTimeout = 5 * time.Second

// A delivery report that fails (the store busy or briefly unreachable) is
// retried deliveryAttempts times in all, waiting deliveryBackoff, then twice
// that, and so on (1.5 s in all), holding its worker meanwhile. One that
// still fails as unavailable (the store out of reach for longer: a
// failover, a cut path) is parked, and tried again every parkedRetry
// until the store answers: the invitation is on the invitee's screen, and
// a report given up left the invitee "inviting" (the caller told it was
// not received) until its client happened to resume. At most maxParked
// wait so; the oldest beyond are given up. A report that fails otherwise
// is given up: the invitee stays inviting until its client resumes with a
// Last-Event-ID past the invitation, which re-derives the report (see
// stream.rederive), or the invitation times out. A presence report that
// fails deliveryAttempts times is parked likewise, whatever the error:
// a lost "online" would let the user's calls end as caller_offline while
// it is connected, a lost "offline" would never arm its grace period.
const (
	deliveryAttempts = 5
	deliveryBackoff  = 100 * time.Millisecond
	parkedRetry      = time.Second
	maxParked        = maxReported
)

func newWork(log *slog.Logger, svc Service, parked prometheus.Gauge) *work {
	return &work{
		log: log, svc: svc, wake: make(chan struct{}, 1), parkedGauge: parked,
		users: map[string]*presenceState{}, reported: map[int64]struct{}{},
	}
}

// presence records that user is online or offline since at.
func (w *work) presence(user string, online bool, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.presenceOff {
		return
	}
	st := w.state(user)
	st.want = online
	if online {
		st.episode = true
	} else {
		st.offlineAt = at
	}
	w.due(user, st)
}

// state returns user's presence state, made if missing. mu is held.
func (w *work) state(user string) *presenceState {
	st := w.users[user]
	if st == nil {
		st = &presenceState{}
		w.users[user] = st
	}
	return st
}

// due marks user's presence changed and queues a report unless one is
// queued or in flight (which queues the next when it ends). mu is held.
func (w *work) due(user string, st *presenceState) {
	st.dirty = true
	if !st.busy && !st.queued {
		w.enqueue(user, st)
	}
}

// A user's presence reports are paced by what they cost: a report that
// took d (pacedFrom or more) is followed by the user's next one no sooner
// than paceFactor × d later, at most maxPace. A report writes each of the
// user's started calls (up to CALLSIG_MAX_STARTED_CALLS_PER_USER), so a
// caller with a thousand of them opening and closing a stream in a loop,
// well within the rate limit, kept the one SQLite writer three quarters
// busy with its reports (a review: 9 openings a second). Changes meanwhile
// coalesce as they do while a report runs (an offline overtaken by a
// reconnection is not reported), so such a user holds a fifth of a
// worker's time at most (two reports in ten times one's cost: the state
// of a user offline and reported so is forgotten, pace and all, so the
// next online report is not held), and less of the writer's when it is
// busy (d grows). Nothing waits on a late report: the grace runs from the close
// (offlineAt), and a deadline checks presence itself before it fires.
// A report of a few calls takes well under pacedFrom and is never held.
const (
	pacedFrom  = 5 * time.Millisecond
	paceFactor = 8
	maxPace    = 2 * time.Second
)

// enqueue queues user's report, at once or, when the last one's pace
// holds it (notBefore), once that has passed. mu is held.
func (w *work) enqueue(user string, st *presenceState) {
	st.queued = true
	if wait := time.Until(st.notBefore); wait > 0 {
		time.AfterFunc(wait, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.presenceOff || w.users[user] != st || !st.queued {
				return
			}
			w.queue = append(w.queue, user)
			w.signal()
		})
		return
	}
	w.queue = append(w.queue, user)
	w.signal()
}

// pace sets when user's next report may start after one that took d. mu
// is held.
func pace(st *presenceState, d time.Duration) {
	if d >= pacedFrom {
		st.notBefore = time.Now().Add(min(paceFactor*d, maxPace))
	}
}

// announced records that a stream of user announced itself (see
// Options.Announce), which may have written the user's presence row
// outside the reports. When the last report made, or the one in flight,
// is "online", the row is accounted for: going offline will be reported.
// Otherwise a report is queued, made even if the user is offline by then,
// so that its UserOffline deletes the row: a stream that opened and closed
// while the workers were busy used to leave its online and offline
// reports to cancel out, and the row kept the user online cluster-wide
// for as long as this node lived.
func (w *work) announced(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.presenceOff {
		return
	}
	st := w.state(user)
	if st.busy && st.reporting || !st.busy && st.applied {
		return
	}
	st.announced = true
	w.due(user, st)
}

func (w *work) stopPresence() {
	w.mu.Lock()
	w.presenceOff = true
	w.queue = nil
	for _, user := range w.parkedUsers {
		if st := w.users[user]; st != nil {
			st.parked = false
		}
	}
	w.parkedUsers = nil
	w.countParked()
	w.mu.Unlock()
}

// countParked sets the gauge of parked reports. mu is held.
func (w *work) countParked() {
	if w.parkedGauge == nil { // tests of work alone
		return
	}
	w.parkedGauge.Set(float64(len(w.parked) + len(w.parkedUsers)))
}

// retryParked queues the parked reports again every parkedRetry until ctx
// is done.
func (w *work) retryParked(ctx context.Context) {
	t := time.NewTicker(parkedRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.unpark()
	}
}

// unpark moves the parked reports back to the queues.
func (w *work) unpark() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.parked) == 0 && len(w.parkedUsers) == 0 {
		return
	}
	w.deliveries = append(w.deliveries, w.parked...)
	w.parked = nil
	users := w.parkedUsers
	w.parkedUsers = nil
	for _, user := range users {
		st := w.users[user]
		if st == nil || !st.parked {
			continue
		}
		st.parked = false
		if !w.presenceOff {
			w.due(user, st)
		}
	}
	w.countParked()
	w.signal()
}

// park keeps d to be tried again later (see deliveryAttempts). mu is held.
func (w *work) park(d delivery) {
	d.parked = true
	w.parked = append(w.parked, d)
	if over := len(w.parked) - maxParked; over > 0 {
		for _, old := range w.parked[:over] {
			delete(w.reported, old.id) // a resuming stream may report it again
		}
		w.log.Error("report delivery: too many parked, the oldest given up", "given_up", over)
		w.parked = append(w.parked[:0:0], w.parked[over:]...)
	}
	w.countParked()
}

// delivered records that the invitation event id, of time invitedAt,
// reached one of user's streams.
func (w *work) delivered(id int64, callID, user string, invitedAt int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.reported[id]; ok {
		return
	}
	if len(w.reported) >= maxReported {
		clear(w.reported)
	}
	w.reported[id] = struct{}{}
	w.deliveries = append(w.deliveries, delivery{id: id, callID: callID, user: user, invitedAt: invitedAt})
	w.signal()
}

func (w *work) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run is one worker; it returns when ctx is done.
func (w *work) run(ctx context.Context) {
	for {
		if ctx.Err() != nil {
			return
		}
		if !w.step(ctx) {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
		}
	}
}

// step runs one queued report and reports whether there was one.
func (w *work) step(ctx context.Context) bool {
	w.mu.Lock()
	for len(w.queue) > 0 {
		user := w.queue[0]
		w.queue[0] = ""
		w.queue = w.queue[1:]
		st := w.users[user]
		st.queued = false
		if !st.dirty || (!st.want && !st.applied && !st.announced && !st.episode) {
			st.dirty = false
			w.forget(user, st)
			continue
		}
		online, episode, announced, since := st.want, st.episode, st.announced, st.offlineAt
		st.busy, st.reporting, st.dirty, st.announced, st.episode = true, online, false, false, false
		retry := st.failing
		more := len(w.queue) > 0 || len(w.deliveries) > 0
		w.mu.Unlock()
		if more {
			w.signal() // let another worker take the rest meanwhile
		}
		began := time.Now()
		ok := w.reportPresence(ctx, user, online, since, retry)
		w.mu.Lock()
		if ok { // a failed one waited out its backoff, and is parked
			pace(st, time.Since(began))
		}
		st.busy, st.failing = false, !ok
		if ok {
			st.applied = online
		} else if !w.presenceOff && ctx.Err() == nil {
			// Not applied, as far as we know: made again once the
			// store answers (or sooner, when the user's presence
			// changes meanwhile). It may have committed; both
			// reports are idempotent.
			// What made it due is due still: a report that fails
			// after an unreported episode or an announcement is made
			// again even though the user is offline and reported so.
			st.dirty = true
			st.episode = st.episode || episode
			st.announced = st.announced || announced
			if !st.parked {
				st.parked = true
				w.parkedUsers = append(w.parkedUsers, user)
				w.countParked()
			}
			w.mu.Unlock()
			return true
		}
		if st.dirty && !w.presenceOff {
			w.enqueue(user, st)
		} else {
			w.forget(user, st)
		}
		w.mu.Unlock()
		return true
	}
	if len(w.deliveries) > 0 {
		d := w.deliveries[0]
		w.deliveries[0] = delivery{}
		w.deliveries = w.deliveries[1:]
		more := len(w.deliveries) > 0
		w.mu.Unlock()
		if more {
			w.signal()
		}
		attempts := deliveryAttempts
		if d.parked {
			attempts = 1 // the store was out of reach: once a retry
		}
		w.reportDelivery(ctx, d, attempts)
		return true
	}
	w.mu.Unlock()
	return false
}

// forget drops the state of a user that is offline and reported so. mu is held.
func (w *work) forget(user string, st *presenceState) {
	if !st.want && !st.applied && !st.busy && !st.queued && !st.dirty && !st.announced && !st.episode {
		delete(w.users, user)
	}
}

// reportPresence reports user online, or offline since since, retrying
// with backoff (as many times as a delivery report) while ctx lasts, once
// only when retry (a parked report tried again), and says whether the
// report was made. A report that fails is parked (see deliveryAttempts).
func (w *work) reportPresence(ctx context.Context, user string, online bool, since time.Time, retry bool) bool {
	wait := deliveryBackoff
	for n := 1; ; n++ {
		var err error
		if online {
			err = w.svc.UserOnline(ctx, user)
		} else {
			err = w.svc.UserOffline(ctx, user, since)
		}
		if err == nil {
			if retry {
				w.log.Info("report presence: made after the store came back", "user", user, "online", online)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if retry || n >= deliveryAttempts {
			if !retry {
				w.log.Error("report presence: parked, tried again every second", "user", user, "online", online, "attempts", n, "err", err)
			}
			return false
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait *= 2
	}
}

// reportDelivery reports d, retrying up to attempts times in all while ctx
// lasts. A delivery is a fact about bytes already sent: each report is made
// even while the server stops, hence a context that outlives ctx; only the
// waits between retries end with it.
func (w *work) reportDelivery(ctx context.Context, d delivery, attempts int) {
	wait := deliveryBackoff
	for n := 1; ; n++ {
		if n >= attempts {
			// The last try: a stream resuming from now on may report the
			// invitation again, even while this try fails, rather than
			// find it still counted as reported and be ignored.
			w.forgetReported(d.id)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliveryTimeout)
		err := w.svc.MarkDelivered(rctx, d.callID, d.user, d.invitedAt)
		cancel()
		code := calls.CodeOf(err)
		if err == nil || code != "" && code != calls.CodeUnavailable {
			// Done, or refused for good (the call is gone): no retry helps.
			// Unavailable is a domain error too, but a passing one (the
			// store cut off, busy or restarting): dropped after one try,
			// the invitee stayed "inviting" with the invitation on screen.
			if err == nil && d.parked {
				w.log.Info("report delivery: made after the store came back", "call", d.callID, "user", d.user)
			}
			return
		}
		if n >= attempts || ctx.Err() != nil {
			if code == calls.CodeUnavailable && ctx.Err() == nil {
				if !d.parked {
					w.log.Error("report delivery: parked, tried again every second", "call", d.callID, "user", d.user, "attempts", n, "err", err)
				}
				w.mu.Lock()
				w.park(d)
				w.mu.Unlock()
				return
			}
			w.log.Error("report delivery", "call", d.callID, "user", d.user, "attempts", n, "err", err)
			w.forgetReported(d.id) // a resuming stream may report it again
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait *= 2
	}
}

// forgetReported lets the invitation event id be reported again.
func (w *work) forgetReported(id int64) {
	w.mu.Lock()
	delete(w.reported, id)
	w.mu.Unlock()
}

// drain reports the deliveries still queued once the workers have stopped,
// one attempt each.
func (w *work) drain(ctx context.Context) {
	w.mu.Lock()
	rest := append(w.deliveries, w.parked...)
	w.deliveries, w.parked = nil, nil
	w.countParked()
	w.mu.Unlock()
	for _, d := range rest {
		w.reportDelivery(ctx, d, 1)
	}
}
