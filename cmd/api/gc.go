package main

import (
	"log/slog"
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
type gcTuner struct {
	headroom uint64
	base     int              // GOGC as the process started (debug.SetGCPercent's answer)
	scanned  []metrics.Sample // what GOGC multiplies: live heap, stacks, globals

	mu      sync.Mutex
	stopped bool
	percent int // last set
}

// gcSentinel is allocated and dropped at once: its cleanup runs after the
// next collection. Larger than 16 bytes, so not in the tiny allocator,
// whose objects may never get their cleanups.
type gcSentinel [32]byte

// tuneGC keeps headroom bytes of heap growth between collections, unless
// headroom is 0 or the operator set GOGC (then the runtime's own pacing is
// the operator's choice). stop restores the percent the process started
// with.
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
	t := &gcTuner{headroom: headroom, base: base, percent: base, scanned: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"},
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

// adjust sets the percent for what the last collection left, and reports
// whether the tuner still runs.
func (t *gcTuner) adjust() bool {
	metrics.Read(t.scanned)
	var scanned uint64
	for _, m := range t.scanned {
		if m.Value.Kind() != metrics.KindUint64 {
			return false // a runtime without these metrics: leave GOGC alone
		}
		scanned += m.Value.Uint64()
	}
	p := t.base
	if live := t.scanned[0].Value.Uint64(); live > 0 { // a collection has measured it
		p = gcPercentFor(live, scanned, t.headroom, t.base)
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
	return true
}

func (t *gcTuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.base)
	}
}
