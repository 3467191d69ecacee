package sqlite

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/jmoiron/sqlx"

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
}

// write runs fn in the write transaction, inside its own savepoint, and
// returns once the transaction that holds fn's changes has committed
// durably, or fn's error (its changes rolled back, the others' kept).
//
// Requests waiting together are committed together (group commit): one
// BEGIN IMMEDIATE, one savepoint per request, one COMMIT and one fsync for
// all of them. fn sees the changes of the requests before it in the batch.
// fn runs on the writer goroutine: it must not call write itself, nor wait
// on anything outside the database.
//
// A request whose ctx is done before it runs is skipped with ctx.Err(). Once
// queued, write waits for the outcome even if ctx ends meanwhile: returning
// early could report a failure for a change that then commits.
func (s *Store) write(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &writeRequest{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return db.ErrClosed
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()
	return unavailable(<-r.done)
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
// queue is empty, so every request queued before Close is answered.
func (s *Store) runWriter() {
	defer close(s.stopped)
	for {
		batch, closed := s.nextBatch()
		if len(batch) > 0 {
			s.commit(batch)
			continue
		}
		if closed {
			return
		}
		<-s.wake
	}
}

// nextBatch takes up to maxBatch requests off the queue.
func (s *Store) nextBatch() ([]*writeRequest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.queue), maxBatch)
	batch := make([]*writeRequest, n)
	copy(batch, s.queue)
	clear(s.queue[:n]) // drop references so answered requests can be collected
	s.queue = s.queue[n:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	return batch, s.closed
}

// commit runs one batch in one transaction and answers every request.
func (s *Store) commit(batch []*writeRequest) {
	errs := make([]error, len(batch))
	batchErr := s.runBatch(batch, errs)
	for i, r := range batch {
		err := errs[i]
		if err == nil {
			err = batchErr // the commit failed: nothing of this batch is stored
		}
		r.done <- err
	}
}

// runBatch fills errs with each request's own outcome and returns the error
// that failed the whole transaction, if any.
func (s *Store) runBatch(batch []*writeRequest, errs []error) error {
	// The transaction's context is not any request's: one request giving up
	// must not roll back the others.
	tx, err := s.wdb.BeginTxx(context.Background(), nil)
	if err != nil {
		return fmt.Errorf("db: begin: %w", err)
	}
	s.batchTx, s.batchStmts = tx, make(map[*sqlx.Stmt]*sqlx.Stmt)
	defer func() { s.batchTx, s.batchStmts = nil, nil }()

	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		ferr, fatal := s.runSavepoint(tx, r.fn)
		errs[i] = ferr
		if fatal != nil {
			_ = tx.Rollback() // the transaction is unusable; its outcome is fatal
			return fatal
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("db: commit: %w", err)
	}
	s.commits.Add(1)
	return nil
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
		return nil, nil
	}
	if _, rerr := s.txStmt(tx, s.wst.rollbackTo).Exec(); rerr != nil {
		return err, fmt.Errorf("db: rollback to savepoint: %w (after %w)", rerr, err)
	}
	// ROLLBACK TO keeps the savepoint open; release it so the next request
	// starts from the same nesting depth.
	if _, rerr := s.txStmt(tx, s.wst.release).Exec(); rerr != nil {
		return err, fmt.Errorf("db: release savepoint: %w", rerr)
	}
	return err, nil
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
