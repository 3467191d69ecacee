package webhooks

import (
	"testing"
	"time"
)

// The breaker's transitions, step by step.
func TestBreakerTransitions(t *testing.T) {
	o := BreakerOptions{Failures: 3, CoolDown: time.Second, MaxCoolDown: 3 * time.Second}
	o.defaults()
	var b breaker
	step := func(name string, got *transition, wantTo int, wantState int) {
		t.Helper()
		if b.state != wantState {
			t.Fatalf("%s: state %d, want %d", name, b.state, wantState)
		}
		if (got == nil) != (wantTo < 0) || (got != nil && got.to != wantTo) {
			t.Fatalf("%s: transition %+v, want to %d", name, got, wantTo)
		}
	}
	step("failure 1", b.record(true, 0, o, 0), -1, BreakerClosed)
	step("failure 2", b.record(true, 0, o, 0), -1, BreakerClosed)
	step("success resets", b.record(false, 0, o, 0), -1, BreakerClosed)
	step("failure 1 again", b.record(true, 0, o, 0), -1, BreakerClosed)
	step("failure 2 again", b.record(true, 0, o, 0), -1, BreakerClosed)
	step("failure 3 opens", b.record(true, 1000, o, 0), BreakerOpen, BreakerOpen)
	if b.openUntil != 2000 {
		t.Fatalf("open until %d, want 2000", b.openUntil)
	}
	if n, tr := b.slots(1999, 4); n != 0 || tr != nil {
		t.Fatalf("slots while open: %d %+v", n, tr)
	}
	step("a late failure changes nothing", b.record(true, 1500, o, 0), -1, BreakerOpen)
	n, tr := b.slots(2000, 4)
	step("cool-down over", tr, BreakerHalfOpen, BreakerHalfOpen)
	if n != 1 {
		t.Fatalf("half-open slots %d, want one probe", n)
	}
	step("probe fails", b.record(true, 2100, o, 0), BreakerOpen, BreakerOpen)
	if b.openUntil != 4100 {
		t.Fatalf("reopened until %d, want the cool-down doubled (4100)", b.openUntil)
	}
	b.slots(4100, 4)
	step("probe fails again", b.record(true, 4200, o, 0), BreakerOpen, BreakerOpen)
	if b.openUntil != 7200 {
		t.Fatalf("reopened until %d, want the cool-down capped at 3s (7200)", b.openUntil)
	}
	b.slots(7200, 4)
	step("probe succeeds", b.record(false, 7300, o, 0), BreakerClosed, BreakerClosed)
	if n, _ := b.slots(7300, 4); n != 4 || b.failures != 0 {
		t.Fatalf("closed again: slots %d, failures %d", n, b.failures)
	}
}

// A failure whose answer asked, with Retry-After, to be left alone longer
// than the cool-down keeps the breaker open until then, at most
// MaxCoolDown; one asking less changes nothing, nor one with none.
func TestBreakerHonoursRetryAfter(t *testing.T) {
	o := BreakerOptions{Failures: 2, CoolDown: time.Second, MaxCoolDown: 10 * time.Second}
	o.defaults()
	var b breaker
	b.record(true, 0, o, 0)
	if tr := b.record(true, 1000, o, 1000+600_000); tr == nil || tr.to != BreakerOpen || b.openUntil != 11_000 {
		t.Fatalf("tripped by a failure asking 600 s: %+v, open until %d, want open until 11000 (MaxCoolDown)", tr, b.openUntil)
	}
	b.slots(11_000, 4) // half-open
	if b.record(true, 11_100, o, 11_100+5000); b.openUntil != 16_100 {
		t.Fatalf("probe failing with Retry-After 5 s: open until %d, want 16100 (longer than the doubled cool-down)", b.openUntil)
	}
	if b.record(true, 12_000, o, 12_000+8000); b.openUntil != 20_000 {
		t.Fatalf("a late failure asking 8 s while open: open until %d, want 20000", b.openUntil)
	}
	if b.record(true, 12_500, o, 12_500+1000); b.openUntil != 20_000 {
		t.Fatalf("a late failure asking less: open until %d, want 20000 kept", b.openUntil)
	}
	var c breaker
	c.record(true, 0, o, 0)
	if c.record(true, 1000, o, 1000+500); c.openUntil != 2000 {
		t.Fatalf("Retry-After under the cool-down: open until %d, want 2000 (the cool-down)", c.openUntil)
	}
}
