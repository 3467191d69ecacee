package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// The ports this store implements, proven at compile time: db.Store
// embeds calls.Store and webhooks.Store.
var _ db.Store = (*Store)(nil)

// Options configures Open; the zero value is the durable default.
type Options struct {
	// Synchronous is the SQLite synchronous level of the writer: "FULL"
	// (default: an acknowledged write survives power loss) or "NORMAL" (a
	// crash of the machine may lose the last commits, never corrupt).
	Synchronous string
	// Logger receives migration notices (default: discarded).
	Logger *slog.Logger
	// ReadConns is the size of the read pool (default 4).
	ReadConns int
	// InlineSync makes FULL sync inside each COMMIT, as SQLite does by
	// itself, instead of in the pipelined syncer (see syncer.go): for
	// benchmarks that compare the two.
	InlineSync bool
	// NoCallCache turns off the writer's call cache (see callcache.go):
	// for benchmarks that compare.
	NoCallCache bool
}

// Store is the SQLite implementation of db.Store: calls.Store, the event
// log the SSE layer reads, the webhook outbox and the idempotency records. It is safe for concurrent use.
type Store struct {
	// The webhook endpoints and outbox over this store's writer and read
	// pool (set by Open).
	db.Webhooks
	// lock holds the file for this process (see Lock).
	lock io.Closer
	// The event log's reads, over the read pool (set by Open).
	db.EventLog

	wdb *sqlx.DB // exactly one connection, used only by the writer goroutine
	rdb *sqlx.DB // query_only pool for every read outside a write
	log *slog.Logger

	wst *writeStatements // prepared on wdb
	rst *readStatements  // prepared on rdb

	// The write queue, see writer.go.
	mu      sync.Mutex
	queue   []*writeRequest
	closed  bool
	wake    chan struct{} // buffered(1): "the queue changed"
	stopped chan struct{} // closed when the writer goroutine has returned

	// Statements of the batch in progress, bound to its transaction; only
	// the writer goroutine touches these (see txStmt).
	batchTx    *sqlx.Tx
	batchStmts map[*sqlx.Stmt]*sqlx.Stmt
	// The calls as the write transaction holds them (see callcache.go);
	// the writer goroutine's only; nil with Options.NoCallCache.
	cache   *callCache
	subs    subscriptions // the writer's too, see subscriptions.go
	commits atomic.Int64  // transactions the writer committed, for tests and benchmarks
	// reqWrote: the write running without a savepoint (runBare) has
	// started a write statement. Set by the calls.Tx methods that write.
	reqWrote bool
	// reqEvents are the events the write running now inserted; a write
	// that succeeds adds them to its batch's (committedBatch.events).
	reqEvents []calls.Event
	// durableFeed, once set (OnDurable), is given each batch's events
	// when its fsync has made them durable.
	durableFeed atomic.Pointer[func([]calls.Event)]
	replays     atomic.Int64 // batches rolled back and run again (replay)
	// endedCount is the callsig_calls gauge's count of ended calls (see
	// CallCounts).
	endedCount endedCount
	// prepared and unprepared count the statements db.Webhooks ran
	// through preparedWrite and preparedRead, and db.EventLog through
	// eventReads: prepared, or as text (a statement it did not
	// prepare), for tests.
	prepared, unprepared atomic.Int64
	// txEnded: the writer's transaction was rolled back since its BEGIN,
	// by a ROLLBACK or by SQLite itself on an error (the rollback hook,
	// see watchRollbacks); not by ROLLBACK TO a savepoint.
	txEnded atomic.Bool
	stats   writerCounters

	// Pipelined durability, see syncer.go. toSync carries the committed
	// batches from the writer to the syncer; syncWAL makes the WAL durable
	// (nil when COMMIT does, or with synchronous=NORMAL).
	toSync       chan committedBatch
	wal          walSyncer // the syncer goroutine's only
	syncWAL      func() error
	syncFailed   atomic.Bool
	syncs        atomic.Int64  // fsyncs the syncer made, for tests
	inflight     atomic.Int64  // batches handed to the syncer, not yet answered
	idle         chan struct{} // buffered(1): "nothing is in flight"
	durableEvent atomic.Int64  // the highest event id known durable
	// Commit numbers: commitSeq is the last given (before COMMIT),
	// syncedSeq the last known durable; syncedCh is closed and replaced
	// after every fsync (waitDurable).
	commitSeq, syncedSeq atomic.Int64
	syncMu               sync.Mutex
	syncedCh             chan struct{}
	durableWaits         atomic.Int64 // times waitDurable waited, for tests

	// ping is the writer probe in flight, if any (see Ping); Close waits
	// for probes, which end once the writer has answered them.
	pingMu    sync.Mutex
	ping      *pingProbe
	probes    sync.WaitGroup
	pingsDone bool // set by Close before it waits for probes

	closeOnce sync.Once
	closeErr  error
}

// Ping checks that both the writer and the read pool reach the database.
// The writer is pinged through the write queue, so a wedged writer shows.
// It answers within ctx: a write waits for its outcome whatever its
// context does, and behind a database locked by another process that is
// busy_timeout (5 s) and more, past /readyz's limit. So the probe runs on
// its own, and a Ping that gives up leaves it to finish there; Pings made
// meanwhile wait for that probe rather than queue more, so a load
// balancer's checks against a stuck writer hold one goroutine, not one
// each.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.PingContext(ctx); err != nil {
		return err
	}
	s.pingMu.Lock()
	if s.pingsDone {
		s.pingMu.Unlock()
		return db.ErrClosed
	}
	p := s.ping
	if p == nil {
		p = &pingProbe{done: make(chan struct{})}
		s.ping = p
		s.probes.Add(1)
		go func() {
			defer s.probes.Done()
			p.err = s.write(context.Background(), func(tx *sqlx.Tx) error {
				var one int
				return tx.QueryRow("SELECT 1").Scan(&one)
			})
			s.pingMu.Lock()
			s.ping = nil
			s.pingMu.Unlock()
			close(p.done)
		}()
	}
	s.pingMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("db: ping: the writer did not answer in time: %w", ctx.Err())
	}
}

// pingProbe is one write through the queue for Ping; err is set before
// done is closed.
type pingProbe struct {
	done chan struct{}
	err  error
}

// Close drains the writes already queued, stops the writer and closes both
// connection pools. Writes after Close fail with db.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.signal()
		<-s.stopped
		s.pingMu.Lock()
		s.pingsDone = true // no probe starts after the Wait below
		s.pingMu.Unlock()
		s.probes.Wait() // answered: the writer drained the queue

		var holder io.Closer
		if s.syncFailed.Load() {
			holder = s.holdWAL()
		} else {
			// PRAGMA optimize is what SQLite recommends running before
			// closing a long-lived connection: it refreshes the planner's
			// statistics where they drifted. Best effort; a failure
			// changes nothing stored.
			_, _ = s.wdb.Exec("PRAGMA optimize")
		}
		s.wst.close()
		s.rst.close()
		s.closeErr = errors.Join(s.rdb.Close(), s.wdb.Close())
		if holder != nil {
			_ = holder.Close()
		}
		_ = s.lock.Close() // last: see Lock
	})
	return s.closeErr
}

// holdWAL keeps the WAL from being checkpointed into the database by the
// closes that follow, after a failed fsync: the last connection to close
// copies the WAL's frames into the database file without checking them,
// and after a failed fsync the kernel may have dropped the pages it could
// not write (so the frames read back may not be the ones written). The
// next start's recovery reads the WAL from the disk and checks every
// frame's checksum, keeping only the valid prefix. It returns a read-only
// connection holding a read lock while the pools close, so none of them
// can take the exclusive lock a checkpoint on close needs; being read-only,
// it does not checkpoint when it closes last. Best effort: nil if the
// connection cannot be opened.
func (s *Store) holdWAL() io.Closer {
	file := strings.TrimSuffix(s.wal.path, "-wal")
	if file == "" {
		return nil
	}
	hold, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
	if err != nil {
		return nil
	}
	hold.SetMaxOpenConns(1)
	var n int
	if err := hold.QueryRow("SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
		s.log.Error("closing after a failed fsync: cannot hold the WAL; it may be checkpointed", "err", err)
		_ = hold.Close()
		return nil
	}
	return hold
}

// OnDurable has f given the events of every batch synced from now on, in
// id order, as soon as the fsync that makes them durable has returned
// and before the batch's writes are answered. It is for the SSE hub, which
// so gets each event at the earliest instant a stream may show it, on the
// syncer goroutine, instead of from each request's goroutine once that
// has been woken with its answer and scheduled: under load milliseconds
// later, and as the hub passes events on in id order, each event waited
// for the last request of its batch to be scheduled. Before the answers,
// not after: the streams it wakes then run ahead of the answered requests,
// which takes about 13 % off the delivery p50 at 64 callers and answers
// the requests about 1 ms later at 16 senders (docs/benchmarks.md). Only
// the events of writes that succeed are given, once: a failed write's
// events roll back with it, and a replayed batch's (see replay) come from
// its last run. f must not block: the next fsync waits for it.
func (s *Store) OnDurable(f func([]calls.Event)) { s.durableFeed.Store(&f) }
