package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// unavailable marks the failures that say "not now" rather than "broken"
// as calls.ErrUnavailable, so the HTTP layer answers 503 with Retry-After
// instead of 500: the server unreachable or going away, out of
// connections, memory or disk, failing I/O, turned into a read-only
// standby, a statement timeout, the conflicts PostgreSQL resolves by
// aborting one transaction (deadlock, serialization failure, lock not
// available), and a session PostgreSQL ended on its own (a FATAL). A
// retry later may well succeed.
func unavailable(err error) error {
	if err == nil || errors.Is(err, calls.ErrUnavailable) {
		return err
	}
	if transient(err) {
		return fmt.Errorf("%w: %w", calls.ErrUnavailable, err)
	}
	return err
}

// transient says whether err is a "not now" failure. A connection that
// pgx closed after a failure earlier in the operation (the path to the
// server cut mid-request) is one: pgconn.ErrConnClosed, which pgx marks
// unsafe to retry because a request may have been sent, is still the
// server out of reach, not a bug; 503 says "maybe", which it is. So is a
// connection that ends mid-answer (io.ErrUnexpectedEOF): a pipeline is
// often the first a write sends on a connection that broke meanwhile.
//
// An error PostgreSQL sends as FATAL or PANIC ends the session, whatever
// its code: its transaction did not commit, or (ended during COMMIT) its
// outcome is unknown, as with a connection lost then, which is 503 too.
// The list below names such codes too, but cannot name those a later
// release adds (PostgreSQL 17's transaction_timeout was one): a code
// missed there answered 500, as idle_in_transaction_session_timeout
// (25P03) ending a write whose fn waited did.
func transient(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case sessionEnded(pe):
			return true
		case pe.Code[:2] == "08": // connection exception
			return true
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		case pe.Code[:2] == "53": // insufficient resources: disk full, out of memory, too many connections
			return true
		case pe.Code == "55P03", pe.Code == "57014": // lock not available, statement timeout
			return true
		case pe.Code == "58030": // I/O error
			return true
		case pe.Code == "25006": // read-only transaction: a standby after a failover
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutdown, cannot connect now
			return true
		case pe.Code == "57P04", pe.Code == "57P05": // database dropped, idle_session_timeout
			return true
		case pe.Code == "25P03", pe.Code == "25P04": // idle_in_transaction_session_timeout, transaction_timeout (PostgreSQL 17)
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) || lostConnection(err) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) && !errors.Is(err, context.Canceled)
}

// sessionEnded says whether PostgreSQL ended the session with pe (FATAL or
// PANIC). The unlocalized severity is the one to compare (PostgreSQL 9.6
// and later send it); Severity is translated under lc_messages.
func sessionEnded(pe *pgconn.PgError) bool {
	sev := pe.SeverityUnlocalized
	if sev == "" {
		sev = pe.Severity
	}
	return sev == "FATAL" || sev == "PANIC"
}

// failed classifies an error: one met after Close (the pool closed under
// it) is db.ErrClosed, a transient one calls.ErrUnavailable.
func (s *Store) failed(err error) error {
	if err != nil && !errors.Is(err, db.ErrClosed) && s.closed.Load() {
		return fmt.Errorf("%w: %w", db.ErrClosed, err)
	}
	if lostConnection(err) {
		s.flushIdle()
	}
	return unavailable(err)
}

// lostConnection says whether err is a connection that broke (the server
// restarted, the network path was cut), as opposed to an error the server
// answered with.
func lostConnection(err error) bool {
	var pe *pgconn.PgError
	if err == nil || errors.As(err, &pe) {
		return false
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed) || errors.As(err, &ne)
}

// flushIdle closes the pool's idle connections: when one connection broke,
// the others opened before it most likely broke with it, and database/sql
// would hand each of them to a request (which would fail) before finding
// out. The next requests open fresh ones.
func (s *Store) flushIdle() {
	s.db.SetMaxIdleConns(0)
	s.db.SetMaxIdleConns(s.maxConns)
}

// inTx runs fn in one transaction and commits it: what fn writes commits
// together, or nothing does when fn fails or panics (a *db.PanicError).
// Commit returns once PostgreSQL has made it durable (synchronous_commit
// on, set by Open); PostgreSQL group-commits concurrent transactions
// itself.
//
// A ctx already done skips the write. Once begun, the transaction is not
// ended by ctx's cancellation (fn's own statements still are): database/sql
// would roll it back when ctx ends, and an end during COMMIT would leave
// the caller an error for a change that may have committed. So an Update
// that returns an error did not commit, bar a connection lost or a bound
// run out during COMMIT itself (writeContext).
func (s *Store) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if s.closed.Load() {
		return db.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	tx, err := s.db.BeginTxx(wctx, nil)
	if err != nil {
		return s.failed(fmt.Errorf("db: begin: %w", err))
	}
	if err := contained(tx, fn); err != nil {
		_ = tx.Rollback()
		return s.failed(outOfTime(wctx, err))
	}
	if err := tx.Commit(); err != nil {
		return s.failed(outOfTime(wctx, fmt.Errorf("db: commit: %w", err)))
	}
	return nil
}

// inTxRetrying is inTx run again when PostgreSQL aborts it to resolve a
// conflict (retryConflicts), as Update is: the webhook store's writes
// (db.Webhooks) run fn again from the start. A claim renewing the leases
// of attempts whose leases ran out, beside the outcome of a 410 failing
// the endpoint's pending deliveries (those leases among them), locks two
// of them in two orders; PostgreSQL aborted one, and run once, an
// aborted outcome was dropped (the delivery sent again after its lease),
// an aborted put failed a node's start, an aborted claim waited for the
// next.
func (s *Store) inTxRetrying(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return s.retryConflicts(ctx, func() error { return s.inTx(ctx, fn) })
}

// outOfTime marks err unavailable when the write transaction's deadline
// has passed: database/sql rolls the transaction back then, and what
// comes after (a statement, COMMIT) fails with sql.ErrTxDone, which is
// no bug of the request's but its time run out (503, not 500).
func outOfTime(wctx context.Context, err error) error {
	if wctx.Err() != nil && !errors.Is(err, calls.ErrUnavailable) {
		return fmt.Errorf("%w: the write ran out of time: %w", calls.ErrUnavailable, err)
	}
	return err
}

// writeContext is the context of a write transaction: ctx without its
// cancellation (see inTx), but with a deadline, ctx's or txBound from now,
// whichever comes first. The statement timeout is the server's and cannot
// end a wait on a network path gone silent: without a deadline of ours, a
// transaction waited for a pool connection, for BEGIN or for COMMIT's
// answer as long as the kernel kept the connection (the dialer bounds that
// too), holding its request, a background loop or a pool slot. A
// transaction that runs out of time is a 503 (unavailable); one whose
// COMMIT was under way may have committed, as with a connection lost
// then, and an Idempotency-Key retry replays it.
func (s *Store) writeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(s.txBound)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// contained runs fn(tx), turning a panic into a *db.PanicError: the panic
// is contained to the one request, whose transaction is rolled back.
func contained[T any](tx T, fn func(T) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &db.PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	return fn(tx)
}

// read runs fn in a read-only transaction, so the several queries of one
// read (a call, then its users) see one snapshot (REPEATABLE READ).
func (s *Store) read(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if s.closed.Load() {
		return db.ErrClosed
	}
	tx, err := s.db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return s.failed(fmt.Errorf("db: begin read: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to undo
	return s.failed(fn(tx))
}

// query is the pool for a read of one statement, or db.ErrClosed.
func (s *Store) query() (*sqlx.DB, error) {
	if s.closed.Load() {
		return nil, db.ErrClosed
	}
	return s.db, nil
}
