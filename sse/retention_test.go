package sse

import (
	"fmt"
	"testing"
	"time"

	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// Pruning runs at start and every PruneEvery of clock time, with the
// clock's cutoff.
func TestPruneFollowsTheClock(t *testing.T) {
	clk := fakeclock.New(time.UnixMilli(1_000_000_000))
	log := newMemLog()
	r := newRig(t, Options{Log: log, Clock: clk, Retention: time.Hour, PruneEvery: time.Minute})
	waitCutoffs := func(n int) []int64 {
		wait.For(t, 3*time.Second, fmt.Sprintf("%d prunes", n), func() bool { return len(log.prunedCutoffs()) >= n })
		return log.prunedCutoffs()
	}
	start := clk.Now()
	waitCutoffs(1)
	clk.Advance(time.Minute)
	got := waitCutoffs(2)
	if want := start.Add(time.Minute - time.Hour).UnixMilli(); got[1] != want {
		t.Fatalf("cutoff %d, want %d", got[1], want)
	}
	_ = r
}
