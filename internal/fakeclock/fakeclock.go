// Package fakeclock is a manual clock for tests: time moves only when the
// test says so, and timers due by then fire. It satisfies calls.Clock.
package fakeclock

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"callsig/calls"
)

// Clock is a manually advanced clock.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

type timer struct {
	c    *Clock
	at   time.Time
	f    func()
	done bool
}

var _ calls.Clock = (*Clock)(nil)

// New returns a clock standing at t.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run in its own goroutine once the clock has been
// advanced by d; d <= 0 runs it at once.
func (c *Clock) AfterFunc(d time.Duration, f func()) calls.Timer {
	c.mu.Lock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		t.done = true
		c.mu.Unlock()
		go f()
		return t
	}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	return t
}

// Advance moves the clock forward by d and fires the timers now due, in
// deadline order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due, rest []*timer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.done = true
			due = append(due, t)
		} else {
			rest = append(rest, t)
		}
	}
	c.timers = rest
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		go t.f()
	}
}

// Stop cancels the timer; it reports whether it was still pending.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	return true
}

// Armed reports whether a timer is pending for at: a test that needs some
// goroutine idle until then (a scheduler armed for its next deadline)
// waits for it before advancing the clock.
func (c *Clock) Armed(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		if t.at.Equal(at) {
			return true
		}
	}
	return false
}

// Skewed is a clock that reads another's time plus an offset, and runs its
// timers on the other clock: the clock of a cluster node that is off from
// the others', as NTP leaves them by tens of milliseconds or more, or a
// wall clock stepped (Step: NTP, a VM resumed) while timers count elapsed
// time, as Go's do on the monotonic clock.
type Skewed struct {
	base   calls.Clock
	offset atomic.Int64 // ns
}

var _ calls.Clock = (*Skewed)(nil)

// NewSkewed returns a clock offset ahead of base (behind when negative).
func NewSkewed(base calls.Clock, offset time.Duration) *Skewed {
	s := &Skewed{base: base}
	s.offset.Store(int64(offset))
	return s
}

// Now returns the base clock's time plus the offset.
func (s *Skewed) Now() time.Time { return s.base.Now().Add(time.Duration(s.offset.Load())) }

// AfterFunc runs f after d on the base clock: a Step does not move it.
func (s *Skewed) AfterFunc(d time.Duration, f func()) calls.Timer { return s.base.AfterFunc(d, f) }

// Step moves the clock's time by d (back when negative), and nothing else.
func (s *Skewed) Step(d time.Duration) { s.offset.Add(int64(d)) }
