package main

import (
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// GC headroom.
//
// Why: Go's collector starts a cycle once the heap has grown by GOGC
// percent (100) of what the last cycle left live (with stacks and
// globals), and at least to 4 MiB. Under a call load the server's live
// heap is a few MiB while each full call cycle allocates about 70 KB, so
// at GOGC=100 it collected 22 times a second at 720 cycles/s; each
// collection stops the world twice, scans every goroutine's stack and
// takes CPU the single writer needs. With the heap allowed to grow by at
// least a headroom (32 MiB by default) between collections, the server
// spent 12-20 % less CPU per call cycle (docs/benchmarks.md,
// "Collections of a small heap").
//
// Once what GOGC multiplies is larger than the headroom, GOGC applies as
// it is, so a server holding many idle streams, whose memory per stream
// is a target of its own, keeps Go's default growth: the headroom can add
// at most its own size to the heap, never a multiple of it.

// maxGCPercent bounds the percent a tiny live heap would need.
const maxGCPercent = 5000

// gcPercentFor returns the GOGC percent that lets the heap grow by about
// headroom before the next collection, or base when base lets it grow
// more. The runtime's goal is live + (live + stacks + globals) * GOGC/100,
// so scanned is that sum, as the last collection measured it; but never
// under 4 MiB * GOGC/100 (the runtime's minimum heap, which scales with
// GOGC), so the percent is also kept where that minimum stays within
// live + headroom.
func gcPercentFor(live, scanned, headroom uint64, base int) int {
	if scanned == 0 || scanned*uint64(base)/100 >= headroom {
		return base
	}
	p := min((headroom*100+scanned-1)/scanned, (live+headroom)*100/minHeap, maxGCPercent)
	return max(int(p), base)
}

// minHeap is the runtime's minimum heap goal at GOGC=100.
const minHeap = 4 << 20

// gcTuner sets the GOGC percent after every collection, from the heap
// that collection left live (see gcPercentFor).
//
// A raised percent suits the heap it was computed for. When the next
// collection leaves much more live (a burst of stream opens), the runtime
// sets that cycle's goal from the old percent until adjust runs again,
// after the sweep, and that goal could be many times the new live heap.
// So while the percent is raised, a soft memory limit holds the process
// to 2 * headroom past what it used when the percent was set: a runtime
// goal is the lower of the two. The operator's own GOMEMLIMIT, if lower,
// stays, and it is all that applies once the percent is back at base.
type gcTuner struct {
	headroom uint64
	base     int   // GOGC as the process started (debug.SetGCPercent's answer)
	limit    int64 // GOMEMLIMIT as the process started
	samples  []metrics.Sample

	mu      sync.Mutex
	stopped bool
	percent int   // last set
	set     int64 // memory limit last set
}

// The samples adjust reads: what GOGC multiplies (live heap, stacks,
// globals), then what the memory limit counts (total less released).
const (
	sampleLive = iota
	sampleStacks
	sampleGlobals
	sampleTotal
	sampleReleased
)

// gcSentinel is allocated and dropped at once: its cleanup runs after the
// next collection. Larger than 16 bytes, so not in the tiny allocator,
// whose objects may never get their cleanups.
type gcSentinel [32]byte

// tuneGC keeps headroom bytes of heap growth between collections, unless
// headroom is 0 or the operator set GOGC (then the runtime's own pacing is
// the operator's choice). stop restores the percent and memory limit the
// process started with.
func tuneGC(headroom uint64, gogcSet bool, log *slog.Logger) (stop func()) {
	if headroom == 0 || gogcSet {
		if gogcSet && headroom > 0 {
			log.Info("GOGC is set: the garbage collector keeps it, without a headroom")
		}
		return func() {}
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base <= 0 { // collection off (GOGC=off via debug.SetGCPercent): leave it
		return func() {}
	}
	limit := debug.SetMemoryLimit(-1) // reads it
	t := &gcTuner{headroom: headroom, base: base, limit: limit, percent: base, set: limit, samples: []metrics.Sample{
		sampleLive:     {Name: "/gc/heap/live:bytes"},
		sampleStacks:   {Name: "/gc/scan/stack:bytes"},
		sampleGlobals:  {Name: "/gc/scan/globals:bytes"},
		sampleTotal:    {Name: "/memory/classes/total:bytes"},
		sampleReleased: {Name: "/memory/classes/heap/released:bytes"},
	}}
	t.arm() // the first collection comes at the runtime's own goal
	return t.stop
}

// arm has adjust run after the next collection, and arm again.
func (t *gcTuner) arm() {
	runtime.AddCleanup(new(gcSentinel), func(t *gcTuner) {
		if t.adjust() {
			t.arm()
		}
	}, t)
}

// adjust sets the percent and the memory limit for what the last
// collection left, and reports whether the tuner still runs.
func (t *gcTuner) adjust() bool {
	metrics.Read(t.samples)
	for _, m := range t.samples {
		if m.Value.Kind() != metrics.KindUint64 {
			return false // a runtime without these metrics: leave the collector alone
		}
	}
	v := func(i int) uint64 { return t.samples[i].Value.Uint64() }
	p, limit := t.base, t.limit
	if live := v(sampleLive); live > 0 { // a collection has measured it
		p = gcPercentFor(live, live+v(sampleStacks)+v(sampleGlobals), t.headroom, t.base)
	}
	if used := v(sampleTotal) - min(v(sampleReleased), v(sampleTotal)); p > t.base {
		limit = min(t.limit, int64(min(used+2*t.headroom, math.MaxInt64/2)))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	if p != t.percent {
		debug.SetGCPercent(p)
		t.percent = p
	}
	if limit != t.set {
		debug.SetMemoryLimit(limit)
		t.set = limit
	}
	return true
}

func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.base)
		debug.SetMemoryLimit(t.limit)
	}
}
