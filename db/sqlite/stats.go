package sqlite

import (
	"database/sql"
	"sync/atomic"
	"time"
)

// WriterStats are running totals of the single writer's work since the
// store opened, for /metrics: how many writes it answered and how long
// they took from queueing to their answer (durable), how long they
// waited for their turn, how long the writer goroutine was busy running
// writes and committing, and how often and how long the WAL was fsynced.
// A rate of a total over a rate of its count is a mean (seconds per
// write, per fsync); busy seconds per second is the writer's utilisation,
// the ceiling of the embedded backend.
type WriterStats struct {
	Writes  int64
	Commits int64
	Syncs   int64
	Latency time.Duration // queued to answered, summed over Writes
	Wait    time.Duration // queued to running, summed over the writes run
	Busy    time.Duration // the writer running writes and COMMITs
	Sync    time.Duration // in fsync of the WAL
	// Calls a write loaded from the writer's call cache (see callcache.go)
	// and from the rows: how much reading back the cache saves.
	CallCacheHits, CallCacheMisses int64
	// Batches rolled back and run again because a change to calls,
	// running without a savepoint, failed after writing (see run):
	// near zero unless writes fail in the database.
	Replays int64
	// The WAL writes SQLite made through the writer's VFS (walvfs.go)
	// and the write calls they were gathered into, in this process (not
	// since the store opened).
	WALWrites, WALWriteCalls int64
}

// WriterStats returns the writer's running totals.
func (s *Store) WriterStats() WriterStats {
	c := &s.stats
	return WriterStats{
		Writes:  c.writes.Load(),
		Commits: s.commits.Load(),
		Syncs:   s.syncs.Load(),
		Latency: time.Duration(c.latency.Load()),
		Wait:    time.Duration(c.wait.Load()),
		Busy:    time.Duration(c.busyNs.Load()),
		Sync:    time.Duration(c.syncNs.Load()),

		CallCacheHits:   c.cacheHits.Load(),
		CallCacheMisses: c.cacheMisses.Load(),
		Replays:         s.replays.Load(),
		WALWrites:       walWrites.given.Load(),
		WALWriteCalls:   walWrites.made.Load(),
	}
}

// writerCounters are the atomics behind WriterStats, in nanoseconds.
type writerCounters struct {
	writes, latency, wait, busyNs, syncNs atomic.Int64
	cacheHits, cacheMisses                atomic.Int64
}

// answered counts a write answered now, queued at queued.
func (c *writerCounters) answered(queued time.Time) {
	c.writes.Add(1)
	c.latency.Add(int64(time.Since(queued)))
}

// started adds the wait of reqs, which the writer starts running at now.
func (c *writerCounters) started(reqs []*writeRequest, now time.Time) {
	var d time.Duration
	for _, r := range reqs {
		d += now.Sub(r.queued)
	}
	c.wait.Add(int64(d))
}

// busy adds the writer's time since began.
func (c *writerCounters) busy(began time.Time) { c.busyNs.Add(int64(time.Since(began))) }

// synced adds an fsync that began at began.
func (c *writerCounters) synced(began time.Time) { c.syncNs.Add(int64(time.Since(began))) }

// Pools returns the writer's connection and the read pool by name, for
// their metrics (go_sql_* on /metrics); not for queries.
func (s *Store) Pools() map[string]*sql.DB {
	return map[string]*sql.DB{"sqlite_write": s.wdb.DB, "sqlite_read": s.rdb.DB}
}
