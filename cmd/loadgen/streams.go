package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// memory is what the server says about its memory.
type memory struct {
	rss        int64 // resident set: /proc when spawned, else process_resident_memory_bytes
	heapInuse  int64
	stackInuse int64
	goroutines int64
}

// readMemory reads the server's /metrics (and /proc when it was spawned).
func readMemory(ctx context.Context, t *target) (memory, error) {
	status, body, err := t.client.get(ctx, "/metrics")
	if err != nil {
		return memory{}, fmt.Errorf("GET /metrics: %w", err)
	}
	if status != 200 {
		return memory{}, fmt.Errorf("GET /metrics: %d", status)
	}
	v := metricValues(body)
	m := memory{
		rss: int64(v["process_resident_memory_bytes"]), heapInuse: int64(v["go_memstats_heap_inuse_bytes"]),
		stackInuse: int64(v["go_memstats_stack_inuse_bytes"]), goroutines: int64(v["go_goroutines"]),
	}
	if t.srv != nil {
		if rss := t.srv.procStatus("VmRSS"); rss > 0 {
			m.rss = rss
		}
	}
	return m, nil
}

// metricValues reads the unlabelled samples of a Prometheus text exposition.
func metricValues(body []byte) map[string]float64 {
	v := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if x, err := strconv.ParseFloat(f[1], 64); err == nil {
			v[f[0]] = x
		}
	}
	return v
}

func runStreams(ctx context.Context, t *target, tab *table, fig figures) error {
	cfg := t.cfg
	users := make([]string, cfg.streams)
	for i := range users {
		users[i] = fmt.Sprintf("%s-s%d", t.prefix, i)
	}
	if err := t.tokens.mint(users...); err != nil {
		return err
	}
	before, err := readMemory(ctx, t)
	if err != nil {
		return err
	}
	fmt.Fprintf(t.log, "loadgen: opening %d idle streams, %d at once…\n", cfg.streams, cfg.openConcurrency)
	set, openTime, err := openStreams(ctx, t, users, nil, cfg.openConcurrency, false, nil)
	if err != nil {
		return err
	}
	defer set.close()
	opened, err := readMemory(ctx, t)
	if err != nil {
		return err
	}
	// Let the server finish the work the opens caused (presence reports)
	// and its garbage collector catch up before reading memory again.
	fmt.Fprintf(t.log, "loadgen: %d streams open in %s; settling %s…\n", cfg.streams, openTime.Round(time.Millisecond), cfg.settle)
	select {
	case <-time.After(cfg.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	after, err := readMemory(ctx, t)
	if err != nil {
		return err
	}
	if f := set.counters.failures.Load(); f > 0 {
		return fmt.Errorf("%d streams failed after opening (last: %v)", f, set.counters.err())
	}

	n := int64(cfg.streams)
	per := func(a, b int64) int64 { return (a - b) / n }
	tab.title = "callsig loadgen: streams"
	tab.add("server", "%s", cfg.url)
	tab.add("streams", "%d opened in %s (%.0f/s), %d at once", n, openTime.Round(time.Millisecond), float64(n)/openTime.Seconds(), cfg.openConcurrency)
	tab.add("server RSS", "%s before, %s when open, %s after %s", mib(before.rss), mib(opened.rss), mib(after.rss), cfg.settle)
	tab.add("per stream: RSS", "%d bytes (%.1f KiB)", per(after.rss, before.rss), float64(per(after.rss, before.rss))/1024)
	tab.add("per stream: heap in use", "%d bytes", per(after.heapInuse, before.heapInuse))
	tab.add("per stream: stacks", "%d bytes", per(after.stackInuse, before.stackInuse))
	tab.add("per stream: goroutines", "%.2f", float64(after.goroutines-before.goroutines)/float64(n))
	tab.add("events read", "%d (pending invitations: none expected)", set.counters.events.Load())

	fig["streams"] = n
	fig["open_time_ms"] = ms(openTime)
	fig["opens_per_sec"] = round2(float64(n) / openTime.Seconds())
	fig["rss_before_bytes"] = before.rss
	fig["rss_after_bytes"] = after.rss
	fig["bytes_per_stream"] = per(after.rss, before.rss)
	fig["heap_bytes_per_stream"] = per(after.heapInuse, before.heapInuse)
	fig["stack_bytes_per_stream"] = per(after.stackInuse, before.stackInuse)
	fig["goroutines_per_stream"] = round2(float64(after.goroutines-before.goroutines) / float64(n))
	fig["stream_failures"] = set.counters.failures.Load()
	return nil
}
