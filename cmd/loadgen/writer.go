package main

import (
	"context"
	"math"
	"time"
)

// writerTotals are the SQLite writer's running totals a server reports on
// /metrics (callsig_store_*), summed over the nodes that report them;
// PostgreSQL nodes have none (ok false).
type writerTotals struct {
	ok                                          bool
	writes, commits, syncs, latency, wait, busy float64
	sync                                        float64
	// schedWaits and schedSum are the Go scheduler's latency histogram
	// (callsig_sched_latency_seconds) of every node, whatever its backend:
	// how often goroutines waited, runnable, for a thread, and for how
	// long in all.
	schedWaits, schedSum float64
}

// readWriter reads the writer's totals from every node.
func readWriter(ctx context.Context, t *target) writerTotals {
	var w writerTotals
	for _, n := range t.nodes {
		status, body, err := n.client.get(ctx, "/metrics")
		if err != nil || status != 200 {
			continue
		}
		v := metricValues(body)
		w.schedWaits += v["callsig_sched_latency_seconds_count"]
		w.schedSum += v["callsig_sched_latency_seconds_sum"]
		if _, has := v["callsig_store_writes_total"]; !has {
			continue
		}
		w.ok = true
		w.writes += v["callsig_store_writes_total"]
		w.commits += v["callsig_store_commits_total"]
		w.syncs += v["callsig_store_wal_syncs_total"]
		w.latency += v["callsig_store_write_seconds_total"]
		w.wait += v["callsig_store_write_wait_seconds_total"]
		w.busy += v["callsig_store_writer_busy_seconds_total"]
		w.sync += v["callsig_store_wal_sync_seconds_total"]
	}
	return w
}

// report adds the nodes' mean scheduling latency between w0 and w, and
// what the writer did over wall: how many writes it answered, how many
// shared a commit, how long one took from its queueing to its durable
// answer and how much of that it waited for its turn, how busy the one
// writer was, and how long an fsync took.
func (w writerTotals) report(w0 writerTotals, wall time.Duration, tab *table, fig figures) {
	if waits := w.schedWaits - w0.schedWaits; waits > 0 {
		// To the microsecond: an idle server's waits are a few of them.
		mean := math.Round((w.schedSum-w0.schedSum)/waits*1e6) / 1000
		tab.add("Go scheduler", "a runnable goroutine waited %.3f ms on average for a thread", mean)
		fig["sched_latency_ms_mean"] = mean
	}
	if !w.ok || !w0.ok {
		return
	}
	writes, commits, syncs := w.writes-w0.writes, w.commits-w0.commits, w.syncs-w0.syncs
	if writes <= 0 || commits <= 0 {
		return
	}
	mean := func(total, n float64) float64 { return round2(total / n * 1000) }
	busy := round2((w.busy - w0.busy) / wall.Seconds() * 100)
	tab.add("SQLite writer", "%.0f writes in %.0f commits (%.1f each); a write %.2f ms queued to durable, %.2f ms of it waiting; writer busy %.0f %%",
		writes, commits, writes/commits, mean(w.latency-w0.latency, writes), mean(w.wait-w0.wait, writes), busy)
	fig["store_writes"] = writes
	fig["store_writes_per_commit"] = round2(writes / commits)
	fig["store_write_ms_mean"] = mean(w.latency-w0.latency, writes)
	fig["store_write_wait_ms_mean"] = mean(w.wait-w0.wait, writes)
	fig["store_writer_busy_pct"] = busy
	if syncs > 0 {
		fig["store_wal_sync_ms_mean"] = mean(w.sync-w0.sync, syncs)
	}
}
