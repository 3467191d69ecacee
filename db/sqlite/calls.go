package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// Call loads a committed call with its users, or calls.ErrCallNotFound,
// returned once what it read is durable (see read): a client never sees a
// state that a power cut could take back, nor one its stream has no events
// for yet (the streams read only durable events; see syncer.go).
func (s *Store) Call(ctx context.Context, callID string) (*calls.Call, error) {
	var c *calls.Call
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		c, err = loadCall(ctx, tx.Stmtx(s.rst.selectCallByID), tx.Stmtx(s.rst.selectUsers), callID)
		return err
	})
	return c, err
}

// durable is waitDurable for a read's answer, with context.
func (s *Store) durable(ctx context.Context) error {
	if err := s.waitDurable(ctx); err != nil {
		return fmt.Errorf("db: read: %w", err)
	}
	return nil
}

// ListCalls returns the calls userID is or was in, newest first, with
// Seq < before (before <= 0: from the newest), at most limit of them
// (limit <= 0: calls.DefaultListCount).
func (s *Store) ListCalls(ctx context.Context, userID string, before int64, limit int) ([]*calls.Call, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	if limit <= 0 {
		limit = calls.DefaultListCount
	}
	var list []*calls.Call
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		list, err = queryCalls(ctx, tx, sqlListCalls, userID, before, limit)
		return err
	})
	return list, err
}

// sqlListCalls pages a user's calls newest first. It filters and orders on
// u.call_seq, not c.seq: that is what lets SQLite walk call_users_by_user
// backwards and stop after limit rows.
var sqlListCalls = `SELECT ` + callColumnsC + `
	FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = ? AND u.call_seq < ?
	ORDER BY u.call_seq DESC LIMIT ?`

// read runs fn in a read-only transaction on the read pool, so the several
// queries of one read (a call, then its users) see one snapshot, and
// returns once what fn read is durable (see durable): every read through
// it answers with state a power cut cannot take back. That holds for an
// answer fn gives as an error too: a call or webhook not found may be a
// deletion (retention, an admin's DELETE) whose fsync is still to come,
// and could fail, answered 503 and the row kept.
func (s *Store) read(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	err := s.readNow(ctx, fn)
	var answer *calls.Error
	if err != nil && (!errors.As(err, &answer) || answer.Code == calls.CodeUnavailable) {
		return err // the store failed: no answer to wait for
	}
	if derr := s.durable(ctx); derr != nil {
		return derr
	}
	return err
}

// readNow is read without the wait: for a read that waits itself only
// when what it found needs it (LookupIdempotency's hits).
func (s *Store) readNow(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	if s.isClosed() {
		return db.ErrClosed
	}
	tx, err := s.rdb.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.readFailed(fmt.Errorf("db: begin read: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to undo
	return s.readFailed(fn(tx))
}

// loadCall reads one call by ID with its users (db.LoadCall), with the
// prepared statements bound to the transaction.
func loadCall(ctx context.Context, callStmt, usersStmt *sqlx.Stmt, callID string) (*calls.Call, error) {
	return db.LoadCall(ctx, db.PreparedStatement(callStmt), db.PreparedStatement(usersStmt), callID)
}

// The retention of ended calls: the oldest pruneBatch, their users first
// (call_users refers to calls). Both select the same calls in one write
// transaction: the same rows in the same order.
const (
	sqlPruneCallUsers = `DELETE FROM call_users WHERE call_seq IN (
		SELECT seq FROM calls INDEXED BY calls_ended
		WHERE state = 'ended' AND end_time < ? ORDER BY end_time, seq LIMIT ?)`
	sqlPruneCalls = `DELETE FROM calls WHERE seq IN (
		SELECT seq FROM calls INDEXED BY calls_ended
		WHERE state = 'ended' AND end_time < ? ORDER BY end_time, seq LIMIT ?)`
)

// PruneCalls deletes the calls that ended before endedBefore (Unix ms),
// with their users, pruneBatch calls per write so that a backlog never
// holds the writer for long, and returns how many calls it deleted. The
// writer's cache forgets every call, pruned ones included.
func (s *Store) PruneCalls(ctx context.Context, endedBefore int64) (int64, error) {
	return db.InBatches(ctx, "calls", pruneBatch, func() (n int64, err error) {
		err = s.write(ctx, func(tx *sqlx.Tx) error {
			ctx := detached(ctx)
			if _, err := tx.ExecContext(ctx, sqlPruneCallUsers, endedBefore, pruneBatch); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, sqlPruneCalls, endedBefore, pruneBatch)
			if err != nil {
				return err
			}
			s.cache.reset()
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	})
}

// queryCalls runs a query selecting callColumns and loads the users of every
// call it returns (db.QueryCalls).
func queryCalls(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) ([]*calls.Call, error) {
	return db.QueryCalls(ctx, q, usersOfCalls, query, args...)
}

// sqlUsersOfCalls selects the users of several calls, their seqs one JSON
// array: one statement text whatever their number, so the writer prepares
// it once (a list of placeholders, one per seq, was parsed anew for every
// claim of deadlines).
const sqlUsersOfCalls = `SELECT call_seq, ` + userColumns + ` FROM call_users
	WHERE call_seq IN (SELECT value FROM json_each(?)) ORDER BY call_seq, ord`

// sqlCallsByID selects several calls, their ids one JSON array.
const sqlCallsByID = `SELECT ` + callColumns + ` FROM calls WHERE id IN (SELECT value FROM json_each(?))`

// usersOfCalls is sqlUsersOfCalls for db.QueryCalls.
func usersOfCalls(seqs []int64) (string, []any, error) {
	return sqlUsersOfCalls, []any{jsonInts(seqs)}, nil
}

// jsonInts is ns as a JSON array.
func jsonInts(ns []int64) string {
	b := make([]byte, 0, 2+len(ns)*8)
	b = append(b, '[')
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return string(append(b, ']'))
}
