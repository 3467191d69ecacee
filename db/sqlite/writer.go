package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/jmoiron/sqlx"
	msqlite "modernc.org/sqlite"

	"callsig/calls"
	"callsig/db"
)

// maxBatch caps how many requests share one transaction, so one commit never
// holds the ones behind it for long.
const maxBatch = 128

// writeRequest is one queued write and where to send its outcome.
type writeRequest struct {
	ctx  context.Context
	fn   func(tx *sqlx.Tx) error
	done chan error // buffered(1): the writer never blocks answering
	// queued is when write queued it, for the writer's statistics.
	queued time.Time
	// callsOnly: fn writes only through a callsTx, so it cannot change the
	// webhook endpoints (see subscriptions.go).
	callsOnly bool
}

// write runs fn in the write transaction, inside its own savepoint, and
// returns once the transaction that holds fn's changes has committed
// durably, or fn's error (its changes rolled back, the others' kept).
//
// Requests waiting together are committed together (group commit): one
// BEGIN IMMEDIATE, one savepoint per request (none for a change to calls
// while it can be replayed instead, see run), one COMMIT and one fsync for
// all of them. fn sees the changes of the requests before it in the batch.
// fn runs on the writer goroutine: it must not call write itself, nor wait
// on anything outside the database.
//
// A request whose ctx is done before it runs is skipped with ctx.Err(). Once
// queued, write waits for the outcome even if ctx ends meanwhile: returning
// early could report a failure for a change that then commits.
func (s *Store) write(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.enqueue(ctx, fn, false)
}

// writeCalls is write for a fn that writes only through a callsTx, and
// may run more than once (calls.Store.Update): it runs without a savepoint
// (see run).
func (s *Store) writeCalls(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.enqueue(ctx, fn, true)
}

func (s *Store) enqueue(ctx context.Context, fn func(tx *sqlx.Tx) error, callsOnly bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.syncFailed.Load() {
		return errStopped
	}
	r := &writeRequest{ctx: ctx, fn: fn, done: make(chan error, 1), queued: time.Now(), callsOnly: callsOnly}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return db.ErrClosed
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()
	err := <-r.done
	s.stats.answered(r.queued)
	return unavailable(err)
}

// signal wakes the writer without blocking; one pending wake is enough since
// the writer takes everything queued when it wakes.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runWriter is the writer goroutine. It is owned by the Store: Close marks
// the queue closed and waits on s.stopped; the loop returns only once the
// queue is empty and the syncer (see syncer.go) has answered every batch,
// so every request queued before Close is answered.
//
// A batch's transaction stays open, taking in the requests that arrive,
// for as long as the syncer is busy with an fsync: no fsync could start
// for it before that one ends, so committing it sooner would answer
// nobody sooner, while one larger commit writes fewer WAL pages than
// several small ones (each writes every page it touched). It commits as
// soon as the syncer is idle, or when it holds maxBatch requests.
func (s *Store) runWriter() {
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		s.runSyncer()
	}()
	defer func() {
		close(s.toSync)
		<-synced
		close(s.stopped)
	}()
	var open *openBatch
	for {
		room := maxBatch
		if open != nil {
			room -= len(open.batch)
		}
		reqs, closed := s.nextBatch(room)
		if len(reqs) > 0 {
			began := time.Now()
			s.stats.started(reqs, began)
			if open == nil {
				open = s.begin()
			}
			open.run(s, reqs)
			s.stats.busy(began)
			if open.failed() {
				s.handOver(open)
				open = nil
				continue
			}
		}
		if open != nil && (len(open.batch) >= maxBatch || s.inflight.Load() == 0 || (closed && len(reqs) == 0)) {
			began := time.Now()
			committed := open.commit(s)
			s.stats.busy(began)
			s.handOver(committed)
			open = nil
			continue
		}
		if len(reqs) > 0 {
			continue // more may be queued
		}
		if open == nil && closed {
			return
		}
		select {
		case <-s.wake:
		case <-s.idle:
		}
	}
}

// nextBatch takes up to n requests off the queue.
func (s *Store) nextBatch(n int) ([]*writeRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = min(len(s.queue), n)
	if n == 0 {
		return nil, s.closed
	}
	batch := make([]*writeRequest, n)
	copy(batch, s.queue)
	clear(s.queue[:n]) // drop references so answered requests can be collected
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	return batch, s.closed
}

// openBatch is the transaction the writer is filling.
type openBatch struct {
	committedBatch
	tx *sqlx.Tx
	// guarded: every request from now on runs in a savepoint (see run).
	guarded bool
}

// failed reports that the batch cannot commit: BEGIN or a savepoint failed.
func (b *openBatch) failed() bool { return b.err != nil }

// begin opens a batch's transaction. Its context is not any request's: one
// request giving up must not roll back the others.
func (s *Store) begin() *openBatch {
	b := &openBatch{}
	tx, err := s.beginTx()
	if err != nil {
		b.err = fmt.Errorf("db: begin: %w", err)
		return b
	}
	b.tx = tx
	return b
}

// beginTx opens the writer's transaction (see begin) and binds the batch's
// statements to it.
func (s *Store) beginTx() (*sqlx.Tx, error) {
	s.txEnded.Store(false)
	tx, err := s.wdb.BeginTxx(context.Background(), nil)
	if err != nil {
		return nil, err
	}
	s.batchTx, s.batchStmts = tx, make(map[*sqlx.Stmt]*sqlx.Stmt)
	return tx, nil
}

// run adds reqs to the batch, recording each one's own outcome. After a
// failure of the savepoint machinery the transaction is rolled back and
// the batch failed: the requests without an error of their own get the
// batch's.
//
// A change to calls (callsOnly) runs without a savepoint of its own while
// no other kind of write has succeeded in the batch (see runBare): a
// savepoint costs a statement journal copy of every page it first touches,
// 5 to 8 % of the writer's CPU (docs/benchmarks.md), and such a request
// nearly always either succeeds or fails before writing anything.
func (b *openBatch) run(s *Store, reqs []*writeRequest) {
	for _, r := range reqs {
		b.batch = append(b.batch, r)
		var err error
		switch {
		case b.err != nil:
		case s.syncFailed.Load():
			// Nothing more may commit after a failed fsync (see syncer.go).
			b.rollback(s, errStopped)
		case r.ctx.Err() != nil:
			err = r.ctx.Err()
		default:
			var fatal error
			s.dropReqEvents()
			if r.callsOnly && !b.guarded {
				err, fatal = b.runBare(s, r)
			} else {
				if !r.callsOnly {
					s.subs.reset()
				}
				err, fatal = s.runSavepoint(b.tx, r.fn)
				// A write that is not a change to calls may not run twice
				// (write's fn need not be re-runnable): once one is in the
				// batch, a failure must be undone without replaying it.
				b.guarded = b.guarded || (err == nil && !r.callsOnly)
			}
			if fatal != nil {
				b.rollback(s, broken(fatal)) // the transaction is unusable; its outcome is fatal
			} else if err == nil {
				b.keepEvents(s)
			}
		}
		b.errs = append(b.errs, err)
	}
}

// runBare runs the batch's last request, r, a change to calls, with no
// savepoint. When it fails before writing anything (the use-case refused
// the transition, or a call was not found) there is nothing to undo.
// Otherwise, or when the failure may have broken the transaction (a driver
// error, a panic), its writes can only go with the whole transaction: the
// batch is rolled back and run again (replay), r included, every request in
// its own savepoint. Only changes to calls ran before r without a savepoint
// (guarded), and their fns may run more than once (calls.Store.Update).
func (b *openBatch) runBare(s *Store, r *writeRequest) (err, fatal error) {
	s.reqWrote = false
	err = callContained(r.fn, b.tx)
	if s.txEnded.Load() {
		// SQLite rolled the transaction back (an error fn did not pass
		// on): the statements since then ran outside it.
		return b.replay(s)
	}
	if err == nil {
		s.cache.released()
		return nil, nil
	}
	if !s.reqWrote && !mayHaveBroken(err) {
		s.cache.rolledBack()
		return err, nil
	}
	return b.replay(s)
}

// mayHaveBroken reports whether a write's error may have come with
// changes of its own or a transaction SQLite rolled back by itself: an
// error of the driver or database/sql, or a panic. Such a failure is
// undone by replaying the batch, never by carrying on.
func mayHaveBroken(err error) bool {
	var se *msqlite.Error
	var pe *db.PanicError
	return errors.As(err, &se) || errors.As(err, &pe) ||
		errors.Is(err, sql.ErrTxDone) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn)
}

// replay rolls the batch's transaction back and runs its requests again in
// a new one, each in its own savepoint: those that had succeeded, the
// changes to calls that were refused, then the last, whose failure sent it
// here. Their callers are all still waiting (a client that left is still
// answered, and its answer recorded). A refusal may rest on what an
// earlier request of the first run did (bob's accept refused as the call
// had ended), and that request may decide otherwise now (a use-case reads
// the clock and presence): kept, it would answer for a state that never
// committed. Changes to calls may run again (calls.Store.Update); other
// writes that failed undid themselves (a savepoint each) and may not. The
// rest of the batch keeps savepoints too (guarded), so a batch is
// replayed at most once. It returns the last request's outcome.
func (b *openBatch) replay(s *Store) (err, fatal error) {
	s.replays.Add(1)
	b.discard(s)
	b.guarded = true
	tx, berr := s.beginTx()
	if berr != nil {
		return nil, fmt.Errorf("db: begin a replay: %w", berr)
	}
	b.tx = tx
	b.events = nil
	last := len(b.batch) - 1
	for i, r := range b.batch[:last] {
		if b.errs[i] != nil && (!r.callsOnly || skipped(b.errs[i])) {
			continue // failed without writing, not to run again: nothing to redo
		}
		s.dropReqEvents()
		if b.errs[i], fatal = s.runSavepoint(tx, r.fn); fatal != nil {
			return nil, fatal
		}
		if b.errs[i] == nil {
			b.keepEvents(s)
		}
	}
	s.dropReqEvents()
	return s.runSavepoint(tx, b.batch[last].fn)
}

// skipped reports whether a request's outcome in a batch is that it never
// ran: its client left before its turn (run). A refusal stays a refusal
// to rerun in a replay even when the client has left since: the answer is
// still recorded under its Idempotency-Key.
func skipped(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// keepEvents adds the events of the write that has just succeeded to the
// batch's; a write that fails drops its own (dropReqEvents runs before
// each write).
func (b *openBatch) keepEvents(s *Store) { b.events = append(b.events, s.reqEvents...) }

// dropReqEvents empties s.reqEvents for the next write, letting go of the
// events' data.
func (s *Store) dropReqEvents() {
	clear(s.reqEvents)
	s.reqEvents = s.reqEvents[:0]
}

// rollback ends a batch that cannot commit, with err as its outcome.
func (b *openBatch) rollback(s *Store, err error) {
	b.discard(s)
	b.err = err
	b.events = nil
}

// discard rolls the batch's transaction back (SQLite may have done so
// already) and forgets what the writer kept of it.
func (b *openBatch) discard(s *Store) {
	if b.tx != nil {
		_ = b.tx.Rollback()
	}
	b.tx = nil
	s.cache.reset()
	s.subs.reset()
	s.batchTx, s.batchStmts = nil, nil
}

// commit commits the batch and returns it for the syncer, with the log's
// highest event id as committed (the streams' cap, see syncer.go): read
// inside the transaction, so it is exactly what this commit leaves.
func (b *openBatch) commit(s *Store) *openBatch {
	defer func() { s.batchTx, s.batchStmts = nil, nil }()
	if s.syncFailed.Load() { // an fsync failed while the batch was open
		b.rollback(s, errStopped)
		return b
	}
	err := s.txStmt(b.tx, s.wst.lastEventID).QueryRow().Scan(&b.lastEvent)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		b.rollback(s, fmt.Errorf("db: read the event log head: %w", err))
		return b
	}
	// Numbered before COMMIT, which makes it visible to readers: a reader
	// that sees it and then asks for durability (waitDurable) waits for
	// this number at least.
	b.seq = s.commitSeq.Add(1)
	if err := b.tx.Commit(); err != nil {
		s.cache.reset()
		s.subs.reset()
		b.err = fmt.Errorf("db: commit: %w", err)
		return b
	}
	s.cache.committed()
	s.commits.Add(1)
	return b
}

// handOver passes a committed (or failed) batch to the syncer, which
// answers every request once the batch is durable. Even a request that
// failed is answered then: its error may depend on what the batches
// before it wrote, which are not durable yet either.
func (s *Store) handOver(b *openBatch) {
	s.inflight.Add(1)
	s.toSync <- b.committedBatch
}

// runSavepoint runs fn between SAVEPOINT and RELEASE, rolling back to the
// savepoint when fn fails or panics. fatal reports that the savepoint
// machinery itself failed (SQLite may have rolled back the whole
// transaction, e.g. on SQLITE_FULL or an I/O error): the batch cannot commit.
func (s *Store) runSavepoint(tx *sqlx.Tx, fn func(tx *sqlx.Tx) error) (err, fatal error) {
	if _, err := s.txStmt(tx, s.wst.savepoint).Exec(); err != nil {
		return nil, fmt.Errorf("db: savepoint: %w", err)
	}
	if err = callContained(fn, tx); err == nil {
		if _, err := s.txStmt(tx, s.wst.release).Exec(); err != nil {
			return nil, fmt.Errorf("db: release savepoint: %w", err)
		}
		s.cache.released()
		return nil, nil
	}
	s.cache.rolledBack()
	if _, rerr := s.txStmt(tx, s.wst.rollbackTo).Exec(); rerr != nil {
		return err, fmt.Errorf("db: rollback to savepoint after %w: %w", err, rerr)
	}
	// ROLLBACK TO keeps the savepoint open; release it so the next request
	// starts from the same nesting depth.
	if _, rerr := s.txStmt(tx, s.wst.release).Exec(); rerr != nil {
		return err, fmt.Errorf("db: release savepoint: %w", rerr)
	}
	return err, nil
}

// broken is the outcome of every request of a batch whose transaction
// broke under it (the savepoint machinery failed: SQLite rolled the whole
// transaction back on SQLITE_FULL or an I/O error): none of them was
// applied and each may succeed later, a "not now" (503) whatever the
// statement that found it out says. The requests beside the one that hit
// the full disk were told "no such savepoint", a plain SQL error: 500.
func broken(err error) error {
	if errors.Is(err, calls.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: the batch's transaction broke: %w", calls.ErrUnavailable, err)
}

// callContained runs fn, turning a panic into a *db.PanicError.
func callContained(fn func(tx *sqlx.Tx) error, tx *sqlx.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &db.PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return fn(tx)
}

// txStmt returns st bound to tx, reusing the binding for the rest of the
// batch: database/sql reuses the statement already prepared on the single
// writer connection, and caching the binding saves allocating a wrapper per
// use. Only valid on the writer goroutine, i.e. inside a write fn.
func (s *Store) txStmt(tx *sqlx.Tx, st *sqlx.Stmt) *sqlx.Stmt {
	if tx != s.batchTx {
		return tx.Stmtx(st)
	}
	bound, ok := s.batchStmts[st]
	if !ok {
		bound = tx.Stmtx(st)
		s.batchStmts[st] = bound
	}
	return bound
}
