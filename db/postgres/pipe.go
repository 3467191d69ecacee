package postgres

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// pipe is a write transaction whose statements reach PostgreSQL in
// pipelines (pgx batches) on one connection: BEGIN rides on the first
// pipeline, and what no one needs an answer to before the commit (Save's
// rows, events and webhook messages) rides on COMMIT's. A change then costs
// a round trip for each answer the use-case waits for (its call's load, a
// busy check) and one for the commit, rather than two more for BEGIN and
// for Save on its own: on a loaded box the round trips, not the statements,
// are most of the cost (docs/benchmarks.md).
//
// Because a statement queued for the commit is only answered with it, a
// check of what it wrote cannot be made in Go before COMMIT runs; such a
// statement checks in SQL (callsig_fail, migration 0003), so the
// transaction fails instead.
type pipe struct {
	conn   *sqlx.Conn
	queued pgx.Batch // statements not sent yet, in order
	begun  bool      // BEGIN has been sent (possibly with a failed pipeline)
	// deadline bounds every statement of the transaction, those sent with
	// a use-case's context too (see writeContext); release ends the
	// timers bound set, when the transaction is over. boundOf and bounded
	// are bound's last answer: a use-case sends all its statements with
	// one context, which then costs one timer a transaction, not one a
	// round trip.
	deadline         time.Time
	release          []context.CancelFunc
	boundOf, bounded context.Context
}

// bound returns ctx with the transaction's deadline, unless ctx ends
// sooner: a use-case's context may have no deadline (a background loop's)
// or a later one, and a statement of the transaction must not wait past
// it on a path gone silent.
func (p *pipe) bound(ctx context.Context) context.Context {
	if d, ok := ctx.Deadline(); ok && !d.After(p.deadline) || p.deadline.IsZero() {
		return ctx
	}
	if ctx == p.boundOf {
		return p.bounded
	}
	b, cancel := context.WithDeadline(ctx, p.deadline)
	p.release = append(p.release, cancel)
	p.boundOf, p.bounded = ctx, b
	return b
}

// close ends the timers of bound.
func (p *pipe) close() {
	for _, cancel := range p.release {
		cancel()
	}
	p.release = nil
}

// queue appends b's statements to those waiting for the next flush.
func (p *pipe) queue(b *pgx.Batch) {
	p.queued.QueuedQueries = append(p.queued.QueuedQueries, b.QueuedQueries...)
}

// flush sends the queued statements, BEGIN first if it has not been sent
// (alone if nothing is queued), in one round trip, and reads their results
// in order through their callbacks. The first error, of a statement or of
// a callback, is returned; PostgreSQL skips the statements after a failed
// one.
func (p *pipe) flush(ctx context.Context) error {
	if p.begun && len(p.queued.QueuedQueries) == 0 {
		return nil
	}
	b := p.queued
	p.queued = pgx.Batch{}
	if !p.begun {
		b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: "BEGIN"}}, b.QueuedQueries...)
		p.begun = true
	}
	ctx = p.bound(ctx)
	return checked(p.raw(func(c *pgx.Conn) error { return c.SendBatch(ctx, &b).Close() }))
}

// ready flushes before a statement sent by other means (sqlx on p.conn):
// the queued statements go first, so all run in the order they were asked
// for, and the transaction has begun. The statement is to be sent with
// the context returned, which has the transaction's deadline (bound).
func (p *pipe) ready(ctx context.Context) (*sqlx.Conn, context.Context, error) {
	return p.conn, p.bound(ctx), p.flush(ctx)
}

// commit sends COMMIT behind the statements still queued. A transaction in
// which nothing was sent commits nothing and costs no round trip.
func (p *pipe) commit(ctx context.Context) error {
	if !p.begun && len(p.queued.QueuedQueries) == 0 {
		return nil
	}
	// A COMMIT of a transaction a failed statement aborted answers
	// ROLLBACK, not an error: should a write ever go on past a failure it
	// swallowed, the change would be reported done and not be there (its
	// events handed to streams, as shown-then-lost). database/sql's and
	// pgx's own Commit check the same.
	p.queued.Queue("COMMIT").Exec(func(ct pgconn.CommandTag) error {
		if ct.String() != "COMMIT" {
			return fmt.Errorf("%w: the transaction was rolled back (%s): a statement in it failed", calls.ErrUnavailable, ct)
		}
		return nil
	})
	return p.flush(ctx)
}

// abort rolls back what was sent. When that fails too the connection is
// dropped from the pool rather than handed on inside a transaction (pgx's
// stdlib would drop it on its next use; this drops it now).
func (p *pipe) abort(ctx context.Context) {
	p.queued = pgx.Batch{}
	if !p.begun {
		return
	}
	_ = p.raw(func(c *pgx.Conn) error {
		if c.PgConn().TxStatus() == 'I' {
			return nil
		}
		if _, err := c.Exec(ctx, "ROLLBACK"); err != nil || c.PgConn().TxStatus() != 'I' {
			return driver.ErrBadConn
		}
		return nil
	})
}

// raw runs f on the pgx connection under p.conn.
func (p *pipe) raw(f func(*pgx.Conn) error) error {
	return p.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("db: a %T is not a pgx connection", dc)
		}
		return f(c.Conn())
	})
}

// The SQLSTATEs of callsig_fail (migration 0003): a statement queued for
// the commit that finds its write wrong fails the transaction with one.
const (
	codeCallNotFound  = "CS404" // Save of a call that does not exist
	codeNotInvitee    = "CS409" // an invitation to a user not in its call
	codeKeyHeld       = "CS503" // an Idempotency-Key's live record stored meanwhile
	sqlFailNotInvitee = `callsig_fail('` + codeNotInvitee + `', 'the invitee is not in the call')`
	sqlFailKeyHeld    = `callsig_fail('` + codeKeyHeld + `', 'the idempotency key is held by another request')`
)

// checked turns callsig_fail's errors into the domain's.
func checked(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case codeCallNotFound:
		return fmt.Errorf("db: save: %w", calls.ErrCallNotFound)
	case codeKeyHeld:
		return fmt.Errorf("db: idempotency key held by another request: %w", calls.ErrUnavailable)
	}
	return err
}

// inPipeTx runs fn in one write transaction on a connection of its own and
// commits it, as inTx does (the same rules for ctx, panics and failures),
// but with statements sent in pipelines (pipe).
func (s *Store) inPipeTx(ctx context.Context, fn func(p *pipe) error) error {
	if s.closed.Load() {
		return db.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, cancel := s.writeContext(ctx)
	defer cancel()
	conn, err := s.db.Connx(wctx)
	if err != nil {
		return s.failed(fmt.Errorf("db: begin: %w", err))
	}
	defer conn.Close()
	deadline, _ := wctx.Deadline()
	p := &pipe{conn: conn, deadline: deadline}
	defer p.close()
	if err := contained(p, fn); err != nil {
		p.abort(wctx)
		return s.failed(err)
	}
	if err := p.commit(wctx); err != nil {
		p.abort(wctx)
		return s.failed(fmt.Errorf("db: commit: %w", err))
	}
	return nil
}
