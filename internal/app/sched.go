package app

import (
	"math"
	"runtime/metrics"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// schedCollector exports callsig_sched_latency_seconds: how long
// goroutines waited, runnable, for a thread to run on (the Go runtime's
// /sched/latencies:seconds). Under load it is a real share of a request's
// latency, next to the store's own figures (callsig_store_*): on a busy
// 2-core node, an answered write's handler waits for a thread about as
// long as the write waited for its fsync (docs/benchmarks.md).
//
// Not the Go collector's optional go_sched_latencies_seconds: that one
// folds the runtime's fine buckets into a few that grow elevenfold and
// sums each wait as its coarse bucket's lower bound, so its mean reads up
// to eleven times too low. Here the sum comes from the fine buckets.
type schedCollector struct {
	desc   *prometheus.Desc
	bounds []float64

	mu     sync.Mutex // metrics.Read fills sample, and its histogram, in place
	sample []metrics.Sample
}

const schedLatencyMetric = "/sched/latencies:seconds"

func newSchedCollector() *schedCollector {
	return &schedCollector{
		desc: prometheus.NewDesc("callsig_sched_latency_seconds",
			"Time goroutines waited, runnable, for a thread (Go runtime /sched/latencies:seconds, sampled by the runtime).", nil, nil),
		bounds: []float64{10e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
		sample: []metrics.Sample{{Name: schedLatencyMetric}},
	}
}

func (c *schedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *schedCollector) Collect(ch chan<- prometheus.Metric) {
	// Folded under mu too: the runtime refills the same histogram in
	// place on the next Read, a concurrent scrape's.
	c.mu.Lock()
	metrics.Read(c.sample)
	v := c.sample[0].Value
	if v.Kind() != metrics.KindFloat64Histogram {
		c.mu.Unlock()
		return // a runtime without the metric: nothing to say
	}
	count, sum, buckets := foldHistogram(v.Float64Histogram(), c.bounds)
	c.mu.Unlock()
	ch <- prometheus.MustNewConstHistogram(c.desc, count, sum, buckets)
}

// foldHistogram turns a runtime histogram into a Prometheus one with the
// upper bounds given: the cumulative count at each bound (a fine bucket
// counts at every bound its upper edge does not pass, so a bucket
// straddling a bound counts at the next one up), the total count, and the
// sum, each wait taken at its fine bucket's middle (at its finite edge for
// the open-ended first and last).
func foldHistogram(h *metrics.Float64Histogram, bounds []float64) (count uint64, sum float64, cumulative map[float64]uint64) {
	cumulative = make(map[float64]uint64, len(bounds))
	for _, b := range bounds {
		cumulative[b] = 0
	}
	for i, n := range h.Counts {
		if n == 0 {
			continue
		}
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		var at float64
		switch {
		case math.IsInf(lo, -1):
			at = hi
		case math.IsInf(hi, 1):
			at = lo
		default:
			at = (lo + hi) / 2
		}
		count += n
		sum += at * float64(n)
		for _, b := range bounds {
			if hi <= b {
				cumulative[b] += n
			}
		}
	}
	return count, sum, cumulative
}
