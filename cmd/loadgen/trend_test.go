package main

import (
	"math"
	"testing"
	"time"
)

func TestSlopePerMinute(t *testing.T) {
	line := func(a, b float64, every time.Duration, n int) []point {
		pts := make([]point, n)
		for i := range pts {
			at := time.Duration(i) * every
			pts[i] = point{at: at, v: a + b*at.Minutes()}
		}
		return pts
	}
	for _, tc := range []struct {
		name string
		pts  []point
		want float64
	}{
		{"no points", nil, 0},
		{"one point", []point{{at: time.Minute, v: 5}}, 0},
		{"two points at one instant", []point{{at: time.Minute, v: 5}, {at: time.Minute, v: 9}}, 0},
		{"constant", line(300, 0, 10*time.Second, 60), 0},
		{"rising 12 per minute", line(100, 12, 10*time.Second, 60), 12},
		{"falling 0.5 per minute", line(100, -0.5, 10*time.Second, 7), -0.5},
		// Noise mirrored about the middle of the window: no trend.
		{"flat with mirrored noise", []point{
			{0, 10}, {time.Minute, 12}, {2 * time.Minute, 8}, {3 * time.Minute, 8}, {4 * time.Minute, 12}, {5 * time.Minute, 10},
		}, 0},
		// By hand: x = 0,1,2 min, y = 1,3,2: mean x 1, mean y 2,
		// Σdx·dy = (-1)(-1)+0+(1)(0) = 1, Σdx² = 2, slope 0.5.
		{"by hand", []point{{0, 1}, {time.Minute, 3}, {2 * time.Minute, 2}}, 0.5},
	} {
		if got := slopePerMinute(tc.pts); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: slope %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestJudge(t *testing.T) {
	g := gauge{name: "go_goroutines", unit: 1, tolerance: 0.05, floor: 20}
	var warm, leak, flat []point
	for i := range 60 {
		at := time.Duration(i) * 10 * time.Second
		// The warm-up climbs steeply and is not fitted.
		warm = append(warm, point{at: at, v: min(float64(i)*50, 300) + float64(i%3)})
		// A leak of 10 goroutines a minute on 300: 80 over 8 minutes.
		leak = append(leak, point{at: at, v: 300 + 10*at.Minutes()})
		flat = append(flat, point{at: at, v: 300 + float64(i%2)*15})
	}
	warmup := 2 * time.Minute
	if tr := judge(g, warm, warmup); !tr.flat || tr.n != 48 {
		t.Errorf("climb during the warm-up only: %+v, want flat over 48 samples", tr)
	}
	if tr := judge(g, leak, warmup); tr.flat || math.Abs(tr.slope-10) > 1e-9 || math.Abs(tr.rise-10*tr.window.Minutes()) > 1e-9 {
		t.Errorf("leak: %+v, want not flat, slope 10/min", tr)
	}
	if tr := judge(g, flat, warmup); !tr.flat {
		t.Errorf("noise without trend: %+v, want flat", tr)
	}
	if tr := judge(g, leak[:5], warmup); tr.n != 0 || tr.verdict() == "" {
		t.Errorf("all samples inside the warm-up: %+v", tr)
	}
}

// A piece of a real callsig /metrics: HELP and TYPE lines, labelled
// series (skipped), exponent notation (what client_golang writes for large
// values) and the four gauges the soak follows.
const metricsSample = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 271
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.7e-05
go_gc_duration_seconds_sum 0.0123
# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 5.070848e+06
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 140
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.2686080e+07
http_requests_total{code="200",method="GET"} 12

process_start_time_seconds 1.76453e+09
`

func TestMetricValues(t *testing.T) {
	v := metricValues([]byte(metricsSample))
	want := map[string]float64{
		"go_goroutines":                 271,
		"go_memstats_heap_inuse_bytes":  5070848,
		"process_open_fds":              140,
		"process_resident_memory_bytes": 32686080,
		"go_gc_duration_seconds_sum":    0.0123,
		"process_start_time_seconds":    1.76453e+09,
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || got != w {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, w)
		}
	}
	for k := range v {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %v (labelled series and comments must be skipped)", k, v[k])
		}
	}
	for _, g := range soakGauges {
		if _, ok := v[g.name]; !ok {
			t.Errorf("the soak's gauge %s is not read", g.name)
		}
	}
}
