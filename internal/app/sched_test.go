package app

import (
	"math"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFoldHistogram(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name       string
		h          metrics.Float64Histogram
		bounds     []float64
		count      uint64
		sum        float64
		cumulative map[float64]uint64
	}{
		{
			name:       "empty",
			h:          metrics.Float64Histogram{Counts: []uint64{0, 0}, Buckets: []float64{0, 1, inf}},
			bounds:     []float64{1},
			cumulative: map[float64]uint64{1: 0},
		},
		{
			// Waits sum at their buckets' middles: 2×1.5 ms + 1×3 ms.
			name:       "middles",
			h:          metrics.Float64Histogram{Counts: []uint64{2, 1}, Buckets: []float64{1e-3, 2e-3, 4e-3}},
			bounds:     []float64{2e-3, 5e-3},
			count:      3,
			sum:        6e-3,
			cumulative: map[float64]uint64{2e-3: 2, 5e-3: 3},
		},
		{
			// A bucket straddling a bound counts at the next bound only;
			// one beyond every bound counts in the total alone.
			name:       "straddling and beyond",
			h:          metrics.Float64Histogram{Counts: []uint64{4, 5, 6}, Buckets: []float64{0, 1, 3, 9}},
			bounds:     []float64{2, 4},
			count:      15,
			sum:        4*0.5 + 5*2 + 6*6,
			cumulative: map[float64]uint64{2: 4, 4: 9},
		},
		{
			// Open ends count at their finite edge.
			name:       "open ends",
			h:          metrics.Float64Histogram{Counts: []uint64{1, 0, 2}, Buckets: []float64{math.Inf(-1), 1, 2, inf}},
			bounds:     []float64{1, 10},
			count:      3,
			sum:        1 + 2*2,
			cumulative: map[float64]uint64{1: 1, 10: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count, sum, cumulative := foldHistogram(&tt.h, tt.bounds)
			if count != tt.count || math.Abs(sum-tt.sum) > 1e-12 {
				t.Errorf("count, sum = %d, %g; want %d, %g", count, sum, tt.count, tt.sum)
			}
			for b, want := range tt.cumulative {
				if cumulative[b] != want {
					t.Errorf("at %g: %d, want %d", b, cumulative[b], want)
				}
			}
			if len(cumulative) != len(tt.bounds) {
				t.Errorf("%d bounds exported, want %d", len(cumulative), len(tt.bounds))
			}
		})
	}
}

// The collector reads the running program's own waits: after goroutines
// have been scheduled, it exports one histogram with a count and a sum.
func TestSchedCollector(t *testing.T) {
	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {})
	}
	wg.Wait()
	c := newSchedCollector()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, want one series", mfs)
	}
	h := mfs[0].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() == 0 || h.GetSampleSum() <= 0 {
		t.Errorf("count %d, sum %g: want waits counted", h.GetSampleCount(), h.GetSampleSum())
	}
	if got := len(h.GetBucket()); got != len(c.bounds) {
		t.Errorf("%d buckets, want %d", got, len(c.bounds))
	}
	if !strings.HasPrefix(mfs[0].GetHelp(), "Time goroutines waited") {
		t.Errorf("help %q", mfs[0].GetHelp())
	}
}
