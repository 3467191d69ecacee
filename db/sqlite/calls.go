package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// Call loads a committed call with its users, or calls.ErrCallNotFound.
func (s *Store) Call(ctx context.Context, callID string) (*calls.Call, error) {
	var c *calls.Call
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		c, err = loadCall(ctx, tx.Stmtx(s.rst.selectCallByID), tx.Stmtx(s.rst.selectUsers), callID)
		return err
	})
	return c, err
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
// queries of one read (a call, then its users) see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
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

// loadCall reads one call by ID with its users, in list order.
func loadCall(ctx context.Context, callStmt, usersStmt *sqlx.Stmt, callID string) (*calls.Call, error) {
	c, err := db.ScanCall(callStmt.QueryRowContext(ctx, callID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, calls.ErrCallNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("db: load call %s: %w", callID, err)
	}
	rows, err := usersStmt.QueryContext(ctx, c.Seq)
	if err != nil {
		return nil, fmt.Errorf("db: load users of %s: %w", callID, err)
	}
	if c.Users, err = db.ScanRows(rows, func(sc db.Scanner) (*calls.CallUser, error) { return db.ScanUser(sc) }); err != nil {
		return nil, fmt.Errorf("db: load users of %s: %w", callID, err)
	}
	return c, nil
}

// queryCalls runs a query selecting callColumns and loads the users of every
// call it returns.
func queryCalls(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) ([]*calls.Call, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("db: query calls: %w", err)
	}
	list, err := db.ScanRows(rows, db.ScanCall) // closes rows: the tx is free for the users query
	if err != nil {
		return nil, fmt.Errorf("db: query calls: %w", err)
	}
	if err := loadUsers(ctx, q, list); err != nil {
		return nil, err
	}
	return list, nil
}

// loadUsers fills the users of all the calls with one query.
func loadUsers(ctx context.Context, q sqlx.QueryerContext, list []*calls.Call) error {
	if len(list) == 0 {
		return nil
	}
	bySeq := make(map[int64]*calls.Call, len(list))
	seqs := make([]int64, len(list))
	for i, c := range list {
		bySeq[c.Seq] = c
		seqs[i] = c.Seq
	}
	query, args, err := sqlx.In(`SELECT call_seq, `+userColumns+` FROM call_users
		WHERE call_seq IN (?) ORDER BY call_seq, ord`, seqs)
	if err != nil {
		return fmt.Errorf("db: load users: %w", err)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("db: load users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		u, err := db.ScanUser(rows, &seq)
		if err != nil {
			return fmt.Errorf("db: load users: %w", err)
		}
		if c := bySeq[seq]; c != nil {
			c.Users = append(c.Users, u)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("db: load users: %w", err)
	}
	return nil
}
