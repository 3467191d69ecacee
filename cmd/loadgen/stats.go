package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// samples collects durations from many goroutines; the figures are taken
// once the run is over.
type samples struct {
	mu sync.Mutex
	v  []time.Duration
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.v = append(s.v, d)
	s.mu.Unlock()
}

// merged is one set of samples holding all of sets.
func merged(sets ...*samples) *samples {
	m := &samples{}
	for _, s := range sets {
		s.mu.Lock()
		m.v = append(m.v, s.v...)
		s.mu.Unlock()
	}
	return m
}

// summary is the distribution of a set of samples.
type summary struct {
	N                       int
	Min, P50, P90, P99, Max time.Duration
}

// summarize sorts a copy of the samples and reads the percentiles by
// nearest rank (the smallest sample with at least p of them at or below).
func (s *samples) summarize() summary {
	s.mu.Lock()
	v := slices.Clone(s.v)
	s.mu.Unlock()
	if len(v) == 0 {
		return summary{}
	}
	slices.Sort(v)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(i, 0)]
	}
	return summary{N: len(v), Min: v[0], P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: v[len(v)-1]}
}

// ms is d in milliseconds rounded to 0.01, for the JSON line.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*100) / 100
}

// put adds the summary to fig as prefix_p50_ms … prefix_max_ms, unless
// there are no samples (a zero would read as a measurement).
func (s summary) put(fig figures, prefix string) {
	if s.N == 0 {
		return
	}
	fig[prefix+"_p50_ms"] = ms(s.P50)
	fig[prefix+"_p90_ms"] = ms(s.P90)
	fig[prefix+"_p99_ms"] = ms(s.P99)
	fig[prefix+"_max_ms"] = ms(s.Max)
}

// figures is the JSON object printed as the last line of every mode.
type figures map[string]any

// table is a readable report: a title, key/value lines and distributions.
type table struct {
	title string
	kv    [][2]string
	dists []struct {
		name string
		s    summary
	}
}

func (t *table) add(key string, format string, args ...any) {
	t.kv = append(t.kv, [2]string{key, fmt.Sprintf(format, args...)})
}

func (t *table) dist(name string, s summary) {
	t.dists = append(t.dists, struct {
		name string
		s    summary
	}{name, s})
}

func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s\n%s\n", t.title, strings.Repeat("=", len(t.title)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range t.kv {
		fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
	if len(t.dists) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "latency (ms)\tn\tmin\tp50\tp90\tp99\tmax\t\n")
	for _, d := range t.dists {
		s := d.s
		if s.N == 0 {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\t-\t\n", d.name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", d.name, s.N, ms(s.Min), ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
	}
	tw.Flush()
}

// mib formats a byte count for the table.
func mib(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
