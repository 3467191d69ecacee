package webhooks

// Breakers returns how many circuit breakers d keeps, for the tests that
// check they are forgotten with their endpoints.
func (d *Dispatcher) Breakers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.breakers)
}
