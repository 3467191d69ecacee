package postgres

import (
	"context"
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
		c, err = loadCall(ctx, tx, sqlSelectCallByID, callID)
		return err
	})
	return c, err
}

// sqlListCalls pages a user's calls newest first along call_users_by_user.
var sqlListCalls = `SELECT ` + db.Prefixed("c.", db.CallColumns) + `
	FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = $1 AND u.call_seq < $2
	ORDER BY u.call_seq DESC LIMIT $3`

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

// exactCountBelow is the table size (by the planner's estimate) up to
// which CallCounts counts the ended calls exactly.
const exactCountBelow = 100_000

// CallCounts returns how many calls are started and ended, for the
// callsig_calls gauge, read on every scrape of every node, so it must stay
// cheap however big the table grows. Started calls (the live ones, few)
// are counted exactly along the partial index calls_started (0009;
// TestStartedCallsCountedAlongTheirIndex).
// Ended calls are nearly every row: up to exactCountBelow rows they are
// counted exactly, beyond that the total is PostgreSQL's own estimate
// (pg_class.reltuples, refreshed by autovacuum and ANALYZE), so a scrape
// never scans millions of rows; the gauge is then approximate for ended
// calls only.
func (s *Store) CallCounts(ctx context.Context) (started, ended int64, err error) {
	var total int64
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &started, `SELECT count(*) FROM calls WHERE state = 'started'`); err != nil {
			return err
		}
		// reltuples is -1 for a table never vacuumed or analyzed.
		if err := tx.GetContext(ctx, &total, `SELECT reltuples::bigint FROM pg_class WHERE oid = 'calls'::regclass`); err != nil {
			return err
		}
		if total >= exactCountBelow {
			return nil
		}
		return tx.GetContext(ctx, &total, `SELECT count(*) FROM calls`)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count calls: %w", err)
	}
	return started, max(total-started, 0), nil
}

// loadCall reads one call by ID (with query, locking or not) and its
// users, in list order (db.LoadCall).
func loadCall(ctx context.Context, tx *sqlx.Tx, query, callID string) (*calls.Call, error) {
	return db.LoadCall(ctx, db.TxStatement(tx, query), db.TxStatement(tx, sqlSelectUsers), callID)
}

// queryCalls runs a query selecting CallColumns and loads the users of
// every call it returns with one more query (db.QueryCalls).
func queryCalls(ctx context.Context, q sqlx.QueryerContext, query string, args ...any) ([]*calls.Call, error) {
	return db.QueryCalls(ctx, q, usersOfCalls, query, args...)
}

// usersOfCalls selects the users of several calls, the seqs passed as one
// array.
func usersOfCalls(seqs []int64) (string, []any, error) {
	return `SELECT call_seq, ` + db.UserColumns + ` FROM call_users
		WHERE call_seq = ANY($1) ORDER BY call_seq, ord`, []any{seqs}, nil
}
