package main

import (
	"fmt"
	"math"
	"time"
)

// point is one sample of a gauge at a time since the soak began.
type point struct {
	at time.Duration
	v  float64
}

// slopePerMinute is the least-squares slope of v over time, in units per
// minute. With fewer than two points, or all at one instant, there is no
// trend and it is 0.
func slopePerMinute(pts []point) float64 {
	n := float64(len(pts))
	if n < 2 {
		return 0
	}
	var sx, sy float64
	for _, p := range pts {
		sx += p.at.Minutes()
		sy += p.v
	}
	mx, my := sx/n, sy/n
	var sxy, sxx float64
	for _, p := range pts {
		dx := p.at.Minutes() - mx
		sxy += dx * (p.v - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return 0
	}
	return sxy / sxx
}

// gauge is one of the server's figures the soak follows, and what counts
// as flat for it.
type gauge struct {
	name   string // the /metrics name
	label  string // for the table
	unit   float64
	suffix string
	// A trend is flat when the rise the fitted line predicts over the
	// measured window is at most tolerance × the mean level, or at most
	// floor (in the metric's own units): noise of a few goroutines or a
	// few hundred KiB is not a leak, and a leak shows as a steady rise,
	// which is what least squares picks out of the churn.
	tolerance, floor float64
}

// soakGauges are sampled from the server's /metrics.
var soakGauges = []gauge{
	{name: "go_goroutines", label: "goroutines", unit: 1, tolerance: 0.05, floor: 20},
	{name: "process_open_fds", label: "open fds", unit: 1, tolerance: 0.05, floor: 20},
	{name: "go_memstats_heap_inuse_bytes", label: "heap in use", unit: 1 << 20, suffix: " MiB", tolerance: 0.10, floor: 4 << 20},
	{name: "process_resident_memory_bytes", label: "RSS", unit: 1 << 20, suffix: " MiB", tolerance: 0.10, floor: 8 << 20},
}

// trend is the verdict on one gauge after the warm-up.
type trend struct {
	g              gauge
	n              int     // samples after the warm-up
	mean, min, max float64 // over those samples
	slope          float64 // per minute
	rise           float64 // slope × the window the samples span
	window         time.Duration
	flat           bool
}

// judge fits a line to the points at or after warmup.
func judge(g gauge, pts []point, warmup time.Duration) trend {
	var after []point
	for _, p := range pts {
		if p.at >= warmup {
			after = append(after, p)
		}
	}
	tr := trend{g: g, n: len(after), min: math.Inf(1), max: math.Inf(-1)}
	if len(after) == 0 {
		return tr
	}
	for _, p := range after {
		tr.mean += p.v
		tr.min, tr.max = min(tr.min, p.v), max(tr.max, p.v)
	}
	tr.mean /= float64(len(after))
	tr.slope = slopePerMinute(after)
	tr.window = after[len(after)-1].at - after[0].at
	tr.rise = tr.slope * tr.window.Minutes()
	tr.flat = tr.rise <= max(g.tolerance*tr.mean, g.floor)
	return tr
}

// verdict is the trend in one line for the table.
func (tr trend) verdict() string {
	if tr.n < 3 {
		return fmt.Sprintf("%d samples after the warm-up: too few to judge", tr.n)
	}
	flag := "flat"
	if !tr.flat {
		flag = "NOT FLAT"
	}
	u := func(v float64) string { return fmt.Sprintf("%.2f%s", v/tr.g.unit, tr.g.suffix) }
	return fmt.Sprintf("%s: slope %s/min (rise %s over %s; mean %s, min %s, max %s, %d samples)",
		flag, u(tr.slope), u(tr.rise), tr.window.Round(time.Second), u(tr.mean), u(tr.min), u(tr.max), tr.n)
}
