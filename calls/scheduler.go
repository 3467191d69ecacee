package calls

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Scheduler fires the durable deadlines (invitation timeouts, not-received
// checks, caller-offline grace). The deadlines live in the store; the
// scheduler keeps one timer on the earliest of them, so an idle server does
// no work, and a restart re-arms everything with one query.
type Scheduler struct {
	s    *Service
	wake chan struct{}

	mu    sync.Mutex
	next  int64 // when the armed timer fires (Unix ms), 0 when none
	timer Timer
}

// How many due deadlines one round fetches and how many it expires at once;
// concurrent expiries let the store commit them in groups.
const (
	dueBatch       = 1000
	expireParallel = 64
	retryDelay     = time.Second
)

func newScheduler(s *Service) *Scheduler {
	return &Scheduler{s: s, wake: make(chan struct{}, 1)}
}

// Arm makes sure the scheduler wakes up by at. Cheap when a timer for an
// earlier deadline is already set, which is the common case.
func (sc *Scheduler) Arm(at int64) {
	sc.mu.Lock()
	earlier := sc.next == 0 || at < sc.next
	sc.mu.Unlock()
	if earlier {
		sc.poke()
	}
}

func (sc *Scheduler) poke() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// run fires due deadlines until ctx is done.
func (sc *Scheduler) run(ctx context.Context) {
	defer sc.setTimer(0)
	for {
		next, err := sc.round(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			sc.s.log.Error("deadline scheduler", "err", err)
			sc.setTimer(sc.s.now() + retryDelay.Milliseconds())
		default:
			sc.setTimer(next) // 0: nothing pending
		}
		select {
		case <-ctx.Done():
			return
		case <-sc.wake:
		}
	}
}

// round expires everything due now and returns the next deadline.
func (sc *Scheduler) round(ctx context.Context) (int64, error) {
	for {
		due, err := sc.s.store.DueDeadlines(ctx, sc.s.now(), dueBatch)
		if err != nil {
			return 0, err
		}
		if failed := sc.expireAll(ctx, due); failed > 0 {
			// Retry later rather than spin on a deadline that keeps failing.
			return 0, fmt.Errorf("%d of %d deadlines failed to expire", failed, len(due))
		}
		if len(due) < dueBatch {
			break
		}
	}
	return sc.s.store.NextDeadline(ctx)
}

func (sc *Scheduler) expireAll(ctx context.Context, due []Deadline) (failed int64) {
	var wg sync.WaitGroup
	var failures atomic.Int64
	sem := make(chan struct{}, expireParallel)
	for _, d := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := sc.s.Expire(ctx, d); err != nil && ctx.Err() == nil {
				sc.s.log.Error("expire deadline", "call", d.CallID, "user", d.UserID, "kind", d.Kind, "err", err)
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	return failures.Load()
}

// setTimer replaces the pending timer with one that pokes the loop at at
// (Unix ms; 0: none).
func (sc *Scheduler) setTimer(at int64) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.timer != nil {
		sc.timer.Stop()
		sc.timer = nil
	}
	sc.next = at
	if at <= 0 {
		return
	}
	for {
		// AfterFunc takes a duration, so a clock that moves between reading
		// it and setting the timer (a test's fake clock jumping ahead) would
		// make the timer fire late or never: then set it again from the new
		// time. A stale timer that fires anyway only pokes the loop once more.
		before := sc.s.clock.Now()
		t := sc.s.clock.AfterFunc(time.Duration(max(at-before.UnixMilli(), 0))*time.Millisecond, sc.poke)
		if sc.s.clock.Now().Sub(before) <= time.Millisecond {
			sc.timer = t
			return
		}
		t.Stop()
	}
}

// armBatch is how many calls one startup arming transaction handles, so a
// restart with many tracked calls never holds the writer for long.
const armBatch = 500

// Run re-arms the caller-offline grace of the calls the rule watches (after
// a start no stream has been open for them yet), then fires deadlines until
// ctx is done. It returns nil after ctx is done, or the error that kept it
// from arming.
func (s *Service) Run(ctx context.Context) error {
	if err := s.armCallersAtStart(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("arm caller-offline deadlines: %w", err)
	}
	s.sched.run(ctx)
	return nil
}

// armCallersAtStart treats every tracked caller as just gone offline,
// through the same pure CallerPresence (and so the same predicate) that
// UserOffline uses. A caller whose stream is already open again is skipped:
// Run may start after the HTTP server, and Presence turns online before
// UserOnline runs, so either this transaction sees the caller online, or
// UserOnline's later transaction clears what this one armed.
func (s *Service) armCallersAtStart(ctx context.Context) error {
	var after int64
	for {
		var (
			changes []*Change
			n       int
		)
		err := s.store.Update(ctx, func(tx Tx) error {
			changes = changes[:0]
			list, err := tx.TrackedCallerOfflineCalls(ctx, after, armBatch)
			if err != nil {
				return err
			}
			n = len(list)
			now := s.now()
			for _, c := range list {
				after = max(after, c.Seq)
				if s.presence.Online(c.Caller) {
					continue
				}
				if ch := CallerPresence(c, false, now, s.cfg.HeartbeatTimeout); ch != nil {
					if err := tx.Save(ctx, ch); err != nil {
						return err
					}
					changes = append(changes, ch)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, ch := range changes {
			s.committed(ch)
		}
		if n < armBatch {
			return nil
		}
	}
}
