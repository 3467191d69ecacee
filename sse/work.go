package sse

import (
	"context"
	"log/slog"
	"sync"
	"time"

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
	// reported holds the event ids already reported as delivered, so an
	// invitation seen by several streams (devices, tabs) is reported once.
	reported map[int64]struct{}
}

type presenceState struct {
	want, applied bool // online now; online as last reported
	dirty         bool // want changed since the last report began
	queued, busy  bool
	reporting     bool // busy: the report in flight is "online"
	// announced: a stream's announcement (Options.Announce) may have
	// written the user's presence row since the last report began, which
	// no report accounts for yet: the next report is made even if the
	// user is offline and reported so, and its UserOffline deletes it.
	announced bool
}

type delivery struct {
	id           int64 // the invitation event
	callID, user string
}

// maxReported bounds the dedup set; forgetting it only costs a no-op report.
const maxReported = 8192

// deliveryTimeout bounds one delivery report.
const deliveryTimeout = 5 * time.Second

// A delivery report that fails (the store busy or briefly unreachable) is
// retried deliveryAttempts times in all, waiting deliveryBackoff, then twice
// that, and so on (1.5 s in all), holding its worker meanwhile. One that
// still fails is given up: the invitee stays inviting until its client
// resumes with a Last-Event-ID past the invitation, which re-derives the
// report (see stream.rederive), or the invitation times out.
const (
	deliveryAttempts = 5
	deliveryBackoff  = 100 * time.Millisecond
)

func newWork(log *slog.Logger, svc Service) *work {
	return &work{
		log: log, svc: svc, wake: make(chan struct{}, 1),
		users: map[string]*presenceState{}, reported: map[int64]struct{}{},
	}
}

// presence records that user is now online or offline.
func (w *work) presence(user string, online bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.presenceOff {
		return
	}
	st := w.state(user)
	st.want = online
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
		st.queued = true
		w.queue = append(w.queue, user)
		w.signal()
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
	w.mu.Unlock()
}

// delivered records that the invitation event id reached one of user's
// streams.
func (w *work) delivered(id int64, callID, user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.reported[id]; ok {
		return
	}
	if len(w.reported) >= maxReported {
		clear(w.reported)
	}
	w.reported[id] = struct{}{}
	w.deliveries = append(w.deliveries, delivery{id: id, callID: callID, user: user})
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
		if !st.dirty || (!st.want && !st.applied && !st.announced) {
			st.dirty = false
			w.forget(user, st)
			continue
		}
		online := st.want
		st.busy, st.reporting, st.dirty, st.announced = true, online, false, false
		more := len(w.queue) > 0 || len(w.deliveries) > 0
		w.mu.Unlock()
		if more {
			w.signal() // let another worker take the rest meanwhile
		}
		w.reportPresence(ctx, user, online)
		w.mu.Lock()
		st.busy, st.applied = false, online
		if st.dirty && !w.presenceOff {
			st.queued = true
			w.queue = append(w.queue, user)
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
		w.reportDelivery(ctx, d, deliveryAttempts)
		return true
	}
	w.mu.Unlock()
	return false
}

// forget drops the state of a user that is offline and reported so. mu is held.
func (w *work) forget(user string, st *presenceState) {
	if !st.want && !st.applied && !st.busy && !st.queued && !st.dirty && !st.announced {
		delete(w.users, user)
	}
}

// reportPresence reports user online or offline, retrying with backoff
// (as many times as a delivery report) while ctx lasts: a lost "online"
// would let a caller's calls end as caller_offline while it is connected,
// a lost "offline" would never arm its grace period.
func (w *work) reportPresence(ctx context.Context, user string, online bool) {
	wait := deliveryBackoff
	for n := 1; ; n++ {
		var err error
		if online {
			err = w.svc.UserOnline(ctx, user)
		} else {
			err = w.svc.UserOffline(ctx, user)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		if n >= deliveryAttempts {
			w.log.Error("report presence", "user", user, "online", online, "attempts", n, "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
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
		err := w.svc.MarkDelivered(rctx, d.callID, d.user)
		cancel()
		if code := calls.CodeOf(err); err == nil || code != "" && code != calls.CodeUnavailable {
			// Done, or refused for good (the call is gone): no retry helps.
			// Unavailable is a domain error too, but a passing one (the
			// store cut off, busy or restarting): dropped after one try,
			// the invitee stayed "inviting" with the invitation on screen.
			return
		}
		if n >= attempts || ctx.Err() != nil {
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
	rest := w.deliveries
	w.deliveries = nil
	w.mu.Unlock()
	for _, d := range rest {
		w.reportDelivery(ctx, d, 1)
	}
}
