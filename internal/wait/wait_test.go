package wait

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	var n atomic.Int32
	if !Until(time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("Until gave up on a condition that became true")
	}
	if n.Load() != 3 {
		t.Fatalf("cond polled %d times, want 3 (it stops once true)", n.Load())
	}
	start := time.Now()
	if Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("Until gave up before its timeout")
	}
}
