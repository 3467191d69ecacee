package app

import (
	"context"
	"database/sql"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"callsig/db"
	"callsig/db/sqlite"
)

// callsCollector exports callsig_calls{state}: calls by state, read from
// the database at scrape time so it is right across restarts.
type callsCollector struct {
	store db.Store
	desc  *prometheus.Desc
}

func newCallsCollector(store db.Store) *callsCollector {
	return &callsCollector{store: store, desc: prometheus.NewDesc("callsig_calls", "Calls by state (started, ended).", []string{"state"}, nil)}
}

func (c *callsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *callsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	started, ended, err := c.store.CallCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(started), "started")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ended), "ended")
}

// newNodeInfo exports callsig_node_info{node, backend} 1: which node a
// scrape came from, joinable onto every other series by instance (the
// usual Prometheus "info" metric, rather than a node label on each series).
func newNodeInfo(node, backend string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "callsig_node_info",
		Help:        "This node: its id (CALLSIG_NODE_ID) and storage backend.",
		ConstLabels: prometheus.Labels{"node": node, "backend": backend},
	})
	g.Set(1)
	return g
}

// writerStatser is a store with a single writer (SQLite).
type writerStatser interface{ WriterStats() sqlite.WriterStats }

// writerCollector exports the SQLite writer's running totals
// (sqlite.WriterStats) as counters, read at scrape time: a rate of a
// _seconds_total over the rate of its count is a mean, and
// callsig_store_writer_busy_seconds_total per second is how much of the
// one writer's time is taken, the embedded backend's ceiling.
type writerCollector struct {
	store                                       writerStatser
	writes, commits, syncs, latency, wait, busy *prometheus.Desc
	sync, cacheHits, cacheMisses, replays       *prometheus.Desc
	walWrites, walWriteCalls                    *prometheus.Desc
}

func newWriterCollector(store writerStatser) *writerCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &writerCollector{
		store:   store,
		writes:  d("callsig_store_writes_total", "Writes the SQLite writer answered (each durable, or failed)."),
		commits: d("callsig_store_commits_total", "Transactions the SQLite writer committed (group commits)."),
		syncs:   d("callsig_store_wal_syncs_total", "fsyncs of the SQLite WAL before answering (pipelined durability)."),
		latency: d("callsig_store_write_seconds_total", "Time from queueing a write to its answer, summed over callsig_store_writes_total."),
		wait:    d("callsig_store_write_wait_seconds_total", "Time writes waited in the queue before the writer ran them, summed."),
		busy:    d("callsig_store_writer_busy_seconds_total", "Time the single writer spent running writes and committing."),
		sync:    d("callsig_store_wal_sync_seconds_total", "Time spent in fsync of the SQLite WAL."),
		cacheHits: d("callsig_store_call_cache_hits_total",
			"Calls a write loaded from the SQLite writer's call cache instead of reading them back."),
		cacheMisses: d("callsig_store_call_cache_misses_total", "Calls a write read from the SQLite rows."),
		replays: d("callsig_store_batch_replays_total",
			"Group commits rolled back and run again because a write failed after writing without a savepoint; near zero unless the database fails writes."),
		walWrites: d("callsig_store_wal_writes_total",
			"Writes SQLite made to the WAL (two per frame: its header, its page)."),
		walWriteCalls: d("callsig_store_wal_write_calls_total",
			"Write system calls those WAL writes were gathered into (a few per commit)."),
	}
}

func (c *writerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.writes, c.commits, c.syncs, c.latency, c.wait, c.busy, c.sync, c.cacheHits, c.cacheMisses, c.replays, c.walWrites, c.walWriteCalls} {
		ch <- d
	}
}

func (c *writerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.store.WriterStats()
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	counter(c.writes, float64(s.Writes))
	counter(c.commits, float64(s.Commits))
	counter(c.syncs, float64(s.Syncs))
	counter(c.latency, s.Latency.Seconds())
	counter(c.wait, s.Wait.Seconds())
	counter(c.busy, s.Busy.Seconds())
	counter(c.sync, s.Sync.Seconds())
	counter(c.cacheHits, float64(s.CallCacheHits))
	counter(c.cacheMisses, float64(s.CallCacheMisses))
	counter(c.replays, float64(s.Replays))
	counter(c.walWrites, float64(s.WALWrites))
	counter(c.walWriteCalls, float64(s.WALWriteCalls))
}

// registerPools exports the database/sql statistics (go_sql_*, labelled
// db_name) of every connection pool p has: whether requests wait for a
// connection is the first thing to look at when a node slows down.
func registerPools(reg prometheus.Registerer, p any) {
	pools, ok := p.(interface{ Pools() map[string]*sql.DB })
	if !ok {
		return
	}
	for name, db := range pools.Pools() {
		reg.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
}
