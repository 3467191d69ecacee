package webhooks

import "time"

// The circuit breaker of one endpoint. An endpoint that keeps failing
// (timeouts, refused connections, 5xx, 429) is not tried for a cool-down,
// so its attempts stop taking workers and its receiver gets a rest; its
// deliveries stay pending, due as they were, and are sent once it answers
// again: nothing is failed or lost by the breaker, and no attempt counts.
//
// The state lives in memory, in the dispatcher: it is advice about a
// receiver's health, not data to keep. After a restart every breaker is
// closed and an endpoint still down opens it again within Failures
// attempts, at most Share of which are in flight at once. Each node of a
// cluster keeps its own.
//
// closed ──Failures consecutive failures──► open ──CoolDown──► half-open
// half-open: one probe attempt; success ► closed, failure ► open again with
// the cool-down doubled (at most MaxCoolDown).
//
// A failure whose answer carried Retry-After (a 503 or 429 of a receiver
// in maintenance) keeps the breaker open at least that long, up to
// MaxCoolDown: probing it sooner only spends a delivery's attempt on an
// answer it already gave.

// BreakerOptions configures the breakers; zero fields get defaults.
type BreakerOptions struct {
	Failures    int           // consecutive failures that open it (default 5)
	CoolDown    time.Duration // first open period (default 30 s)
	MaxCoolDown time.Duration // longest open period (default 10 min)
}

// Breaker states, the values of callsig_webhook_breaker_state.
const (
	BreakerClosed   = 0
	BreakerOpen     = 1
	BreakerHalfOpen = 2
)

type breaker struct {
	state     int
	failures  int   // consecutive, while closed
	openUntil int64 // Unix ms, while open
	coolDown  time.Duration
}

// transition is a change of state worth a log line and a metric.
type transition struct {
	from, to int
	failures int
	until    int64 // Unix ms, when opened
}

func (o *BreakerOptions) defaults() {
	if o.Failures <= 0 {
		o.Failures = 5
	}
	if o.CoolDown <= 0 {
		o.CoolDown = 30 * time.Second
	}
	if o.MaxCoolDown < o.CoolDown {
		o.MaxCoolDown = max(10*time.Minute, o.CoolDown)
	}
}

// slots returns how many attempts the breaker lets be in flight at now,
// share when closed, and moves an open breaker whose cool-down is over to
// half-open.
func (b *breaker) slots(now int64, share int) (int, *transition) {
	switch b.state {
	case BreakerOpen:
		if now < b.openUntil {
			return 0, nil
		}
		b.state = BreakerHalfOpen
		return 1, &transition{from: BreakerOpen, to: BreakerHalfOpen}
	case BreakerHalfOpen:
		return 1, nil
	}
	return share, nil
}

// record counts the outcome of an attempt that ended at now.
func (b *breaker) record(failed bool, now int64, o BreakerOptions, quietUntil int64) *transition {
	if !failed {
		if b.state == BreakerClosed {
			b.failures = 0
			return nil
		}
		from := b.state
		*b = breaker{}
		return &transition{from: from, to: BreakerClosed}
	}
	switch b.state {
	case BreakerClosed:
		b.failures++
		if b.failures < o.Failures {
			return nil
		}
		b.coolDown = o.CoolDown
	case BreakerHalfOpen:
		b.coolDown = min(2*b.coolDown, o.MaxCoolDown)
	case BreakerOpen:
		// An attempt started before it opened: only a Retry-After longer
		// than the cool-down left changes it (no transition: still open).
		b.openUntil = max(b.openUntil, b.asked(now, o, quietUntil))
		return nil
	}
	from := b.state
	b.state, b.openUntil = BreakerOpen, max(now+b.coolDown.Milliseconds(), b.asked(now, o, quietUntil))
	return &transition{from: from, to: BreakerOpen, failures: b.failures, until: b.openUntil}
}

// asked is when a receiver's Retry-After (quietUntil, Unix ms; 0: none)
// asks to be left alone until, at most MaxCoolDown from now.
func (b *breaker) asked(now int64, o BreakerOptions, quietUntil int64) int64 {
	return min(quietUntil, now+o.MaxCoolDown.Milliseconds())
}
