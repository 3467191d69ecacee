package main

import (
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"callsig/internal/wait"
)

const mib = 1 << 20

func TestGCPercentFor(t *testing.T) {
	for _, tt := range []struct {
		name                    string
		live, scanned, headroom uint64
		base, want              int
	}{
		{"no collection measured yet", 0, 0, 32 * mib, 100, 100},
		{"heap past the headroom: GOGC as it is", 40 * mib, 42 * mib, 32 * mib, 100, 100},
		{"small heap: grows by the headroom", 2 * mib, 4 * mib, 32 * mib, 100, 800},
		{"rounded up", 5 * mib, 6 * mib, 32 * mib, 100, 534},
		{"tiny heap: the runtime's minimum heap bounds it", mib / 2, mib, 32 * mib, 100, 812},
		{"never under the operator's base", 2 * mib, 4 * mib, 32 * mib, 1000, 1000},
		{"bounded", 1, 1, 1 << 40, 100, maxGCPercent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := gcPercentFor(tt.live, tt.scanned, tt.headroom, tt.base); got != tt.want {
				t.Errorf("gcPercentFor(%d, %d, %d, %d) = %d, want %d", tt.live, tt.scanned, tt.headroom, tt.base, got, tt.want)
			}
		})
	}
}

// gcGrowth is how far the heap may grow before the next collection.
func gcGrowth() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64()) - int64(s[1].Value.Uint64())
}

// The tuner sets GOGC after each collection so that this test process's
// small heap grows by about the headroom, and stop puts GOGC back.
func TestTuneGCKeepsTheHeadroom(t *testing.T) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	// No operator limit for the test (one in the environment would cap
	// the goal), put back when it ends.
	limit := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(limit)
	runtime.GC()
	// A headroom well past how far this heap grows by itself.
	headroom := max(64*mib, 4*gcGrowth())
	stop := tuneGC(uint64(headroom), false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer stop()
	wait.For(t, 5*time.Second, "the goal to leave the headroom", func() bool {
		runtime.GC() // the tuner runs after each collection
		g := gcGrowth()
		return g > headroom*9/10 && g < headroom*11/10
	})
	// While GOGC is raised, a memory limit bounds the goal a collection
	// that finds the heap much larger would set from it (see gcTuner).
	if l := debug.SetMemoryLimit(-1); l == math.MaxInt64 || l < 2*headroom {
		t.Fatalf("memory limit %d MiB while tuned, want 2 * headroom past the memory in use", l/mib)
	}
	stop()
	if p := debug.SetGCPercent(base); p != base {
		t.Fatalf("GOGC %d after stop, want %d", p, base)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Fatalf("memory limit %d after stop, want none", l)
	}
	runtime.GC()
	if g := gcGrowth(); g > headroom/2 {
		t.Fatalf("the heap grows by %d MiB after stop", g/mib)
	}
}

// With GOGC set, or no headroom, the collector is left alone.
func TestTuneGCLeavesAnOperatorsGOGC(t *testing.T) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	limit := debug.SetMemoryLimit(-1)
	for _, tt := range []struct {
		headroom uint64
		gogcSet  bool
	}{{64 * mib, true}, {0, false}} {
		stop := tuneGC(tt.headroom, tt.gogcSet, slog.New(slog.NewTextHandler(io.Discard, nil)))
		runtime.GC()
		runtime.GC()
		if p := debug.SetGCPercent(base); p != base {
			t.Fatalf("headroom %d, GOGC set %v: GOGC %d, want %d", tt.headroom, tt.gogcSet, p, base)
		}
		if l := debug.SetMemoryLimit(-1); l != limit {
			t.Fatalf("headroom %d, GOGC set %v: memory limit %d, want %d", tt.headroom, tt.gogcSet, l, limit)
		}
		stop()
	}
}
