package db

// Loading calls with their users, for every backend.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// LoadCall reads one call by ID with call (selecting CallColumns, locking
// the row or not) and its users, in list order, with users (selecting
// UserColumns of a call_seq). An unknown ID is calls.ErrCallNotFound.
func LoadCall(ctx context.Context, call, users Statement, callID string) (*calls.Call, error) {
	c, err := ScanCall(call.QueryRowContext(ctx, callID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, calls.ErrCallNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("db: load call %s: %w", callID, err)
	}
	rows, err := users.QueryContext(ctx, c.Seq)
	if err != nil {
		return nil, fmt.Errorf("db: load users of %s: %w", callID, err)
	}
	if c.Users, err = ScanRows(rows, scanUser); err != nil {
		return nil, fmt.Errorf("db: load users of %s: %w", callID, err)
	}
	return c, nil
}

// scanUser is ScanUser with no lead columns, for ScanRows.
func scanUser(sc Scanner) (*calls.CallUser, error) { return ScanUser(sc) }

// UsersOfCalls builds the query of the users of several calls, given their
// seqs: it selects call_seq then UserColumns, ordered by call_seq and list
// order. Each backend spells "one of these seqs" its own way.
type UsersOfCalls func(seqs []int64) (query string, args []any, err error)

// QueryCalls runs query (selecting CallColumns) on q and loads the users of
// every call it returns with one more query, built by usersOf.
func QueryCalls(ctx context.Context, q sqlx.QueryerContext, usersOf UsersOfCalls, query string, args ...any) ([]*calls.Call, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("db: query calls: %w", err)
	}
	return CallsWithUsers(rows, func(seqs []int64) (*sql.Rows, error) {
		uquery, uargs, err := usersOf(seqs)
		if err != nil {
			return nil, err
		}
		return q.QueryContext(ctx, uquery, uargs...)
	})
}

// CallsWithUsers scans rows (selecting CallColumns; it closes them) and
// loads the users of every call they hold with users, given the calls'
// seqs: its rows select call_seq then UserColumns, ordered by call_seq and
// list order.
func CallsWithUsers(rows *sql.Rows, users func(seqs []int64) (*sql.Rows, error)) ([]*calls.Call, error) {
	list, err := ScanRows(rows, ScanCall) // closes rows: the tx is free for the users query
	if err != nil {
		return nil, fmt.Errorf("db: query calls: %w", err)
	}
	if len(list) == 0 {
		return list, nil
	}
	bySeq := make(map[int64]*calls.Call, len(list))
	seqs := make([]int64, len(list))
	for i, c := range list {
		bySeq[c.Seq] = c
		seqs[i] = c.Seq
	}
	urows, err := users(seqs)
	if err != nil {
		return nil, fmt.Errorf("db: load users: %w", err)
	}
	defer urows.Close()
	for urows.Next() {
		var seq int64
		u, err := ScanUser(urows, &seq)
		if err != nil {
			return nil, fmt.Errorf("db: load users: %w", err)
		}
		if c := bySeq[seq]; c != nil {
			c.Users = append(c.Users, u)
		}
	}
	if err := urows.Err(); err != nil {
		return nil, fmt.Errorf("db: load users: %w", err)
	}
	return list, nil
}

// CallRow is what an update of a call's row writes (every column but the
// caller and the creation time, which never change), with the id and seq
// it matches: saving a call whose CallRow equals the row's as read leaves
// the row as it is, and a backend skips the update (a delivery mark, an
// accept in an advanced call, change users only). presence_matters is
// derived from the users too (calls.PresenceMatters).
type CallRow struct {
	ID               string
	Seq              int64
	Mode             calls.Mode
	State            calls.CallState
	Timeout          int
	ExtendedData     string
	EndTime          int64
	EndReason        calls.EndReason
	NotReceivedCheck bool
	CallerTracked    bool
	CallerOfflineAt  int64
	PresenceMatters  bool
}

// RowOf returns c's CallRow.
func RowOf(c *calls.Call) CallRow {
	return CallRow{
		ID: c.ID, Seq: c.Seq, Mode: c.Mode, State: c.State, Timeout: c.Timeout, ExtendedData: c.ExtendedData,
		EndTime: c.EndTime, EndReason: c.EndReason, NotReceivedCheck: c.NotReceivedCheck,
		CallerTracked: c.CallerTracked, CallerOfflineAt: c.CallerOfflineAt, PresenceMatters: calls.PresenceMatters(c),
	}
}
