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
