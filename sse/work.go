package sse

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// work runs the hub's reports to the Service off the request path: a
// user's first stream opening or last stream closing (UserOnline,
// UserOffline) and each flushed invitation (MarkDelivered). Each is a write
// transaction, so several run at once and the store commits them together.
type work struct {
	log  *slog.Logger
	svc  Service // set by Hub.Start before the workers run
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
}

type delivery struct {
	callID, user string
}

// maxReported bounds the dedup set; forgetting it only costs a no-op report.
const maxReported = 8192

// deliveryTimeout bounds one delivery report.
const deliveryTimeout = 5 * time.Second

func newWork(log *slog.Logger) *work {
	return &work{
		log: log, wake: make(chan struct{}, 1),
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
	st := w.users[user]
	if st == nil {
		st = &presenceState{}
		w.users[user] = st
	}
	st.want, st.dirty = online, true
	if !st.busy && !st.queued {
		st.queued = true
		w.queue = append(w.queue, user)
		w.signal()
	}
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
	w.deliveries = append(w.deliveries, delivery{callID: callID, user: user})
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
		if !st.dirty || (!st.want && !st.applied) {
			st.dirty = false
			w.forget(user, st)
			continue
		}
		st.busy, st.dirty = true, false
		online := st.want
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
		// A delivery is a fact about bytes already sent: it is recorded even
		// while the server stops, hence a context that outlives ctx.
		w.reportDelivery(context.WithoutCancel(ctx), d)
		return true
	}
	w.mu.Unlock()
	return false
}

// forget drops the state of a user that is offline and reported so. mu is held.
func (w *work) forget(user string, st *presenceState) {
	if !st.want && !st.applied && !st.busy && !st.queued && !st.dirty {
		delete(w.users, user)
	}
}

func (w *work) reportPresence(ctx context.Context, user string, online bool) {
	var err error
	if online {
		err = w.svc.UserOnline(ctx, user)
	} else {
		err = w.svc.UserOffline(ctx, user)
	}
	if err != nil && ctx.Err() == nil {
		w.log.Error("report presence", "user", user, "online", online, "err", err)
	}
}

func (w *work) reportDelivery(ctx context.Context, d delivery) {
	ctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	if err := w.svc.MarkDelivered(ctx, d.callID, d.user); err != nil {
		w.log.Error("report delivery", "call", d.callID, "user", d.user, "err", err)
	}
}

// drain reports the deliveries still queued once the workers have stopped.
func (w *work) drain(ctx context.Context) {
	w.mu.Lock()
	rest := w.deliveries
	w.deliveries = nil
	w.mu.Unlock()
	for _, d := range rest {
		w.reportDelivery(context.WithoutCancel(ctx), d)
	}
}
