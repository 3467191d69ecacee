// Package wait is the tests' one way to wait for something: poll a
// condition until it holds or a deadline passes. Tests never sleep to let
// something happen; they wait for its visible effect, so they are as fast
// as the machine allows and fail with a message naming what never came.
package wait

import (
	"testing"
	"time"
)

// pollEvery is short enough not to slow a test down, long enough that a
// poll costs nothing next to the work it waits on.
const pollEvery = 2 * time.Millisecond

// For polls cond until it holds, failing t with what after timeout.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Until polls cond until it holds or timeout passes, and reports whether
// it held: for a caller that fails with its own message, or goes on.
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery)
	}
	return true
}
