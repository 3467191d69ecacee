package webhooks

import "time"

// Breakers returns how many circuit breakers d keeps, for the tests that
// check they are forgotten with their endpoints.
func (d *Dispatcher) Breakers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.breakers)
}

// SetMaxWait sets how long d sleeps at most without reading what is due
// (maxTimerWait); call it before Run.
func (d *Dispatcher) SetMaxWait(w time.Duration) { d.maxWait = w }

// TimerAt returns when d's timer fires (Unix ms, 0: none), for tests that
// move a fake clock once the dispatcher has set it.
func (d *Dispatcher) TimerAt() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timerAt
}

// ExpireLeaseMargin is expireLeaseMargin, for the test of its end.
const ExpireLeaseMargin = expireLeaseMargin
