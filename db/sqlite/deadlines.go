package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// sqlDueDeadlines reads each kind of deadline from its own partial index,
// at most limit of each, then merges them (a sort of at most 3 × limit rows).
const sqlDueDeadlines = `
		SELECT * FROM (
			SELECT c.id, u.user_id, ? AS kind, u.timeout_at AS at
			FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.timeout_at > 0 AND u.timeout_at <= ? ORDER BY u.timeout_at LIMIT ?)
		UNION ALL SELECT * FROM (
			SELECT c.id, u.user_id, ?, u.not_received_at
			FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.not_received_at > 0 AND u.not_received_at <= ? ORDER BY u.not_received_at LIMIT ?)
		UNION ALL SELECT * FROM (
			SELECT id, '', ?, caller_offline_at
			FROM calls
			WHERE caller_offline_at > 0 AND caller_offline_at <= ? ORDER BY caller_offline_at LIMIT ?)
		ORDER BY at, kind, id, user_id LIMIT ?`

// sqlNextDeadline reads the first entry of each deadline index.
const sqlNextDeadline = `SELECT COALESCE(MIN(at), 0) FROM (
		SELECT * FROM (SELECT timeout_at AS at FROM call_users WHERE timeout_at > 0 ORDER BY timeout_at LIMIT 1)
		UNION ALL SELECT * FROM (SELECT not_received_at FROM call_users WHERE not_received_at > 0 ORDER BY not_received_at LIMIT 1)
		UNION ALL SELECT * FROM (SELECT caller_offline_at FROM calls WHERE caller_offline_at > 0 ORDER BY caller_offline_at LIMIT 1))`

// DueDeadlines returns up to limit deadlines with At <= now, earliest first
// (limit <= 0: 100). Each kind is read from its own partial index, taking
// at most limit from each before merging, so the cost does not grow with
// how many deadlines are due.
func (s *Store) DueDeadlines(ctx context.Context, now int64, limit int) ([]calls.Deadline, error) {
	query := func(ctx context.Context, args ...any) (*sql.Rows, error) {
		return s.rdb.QueryContext(ctx, sqlDueDeadlines, args...)
	}
	return dueDeadlines(ctx, query, now, limit)
}

var _ calls.DeadlineClaimer = (*Store)(nil)

// UpdateDue runs fn in the write transaction (see write) with up to limit
// deadlines due at now, earliest first (limit <= 0: 100), and returns how
// many it gave fn (calls.DeadlineClaimer): the scheduler fires a batch of
// deadlines with one request instead of one each. fn is called even when
// nothing is due, given nothing.
//
// The deadlines are read with DueDeadlines' query inside the write
// transaction, not from the read pool: they include the changes of the
// requests before it in the group commit, and the single writer runs
// concurrent UpdateDues one after the other, so no deadline is handed to
// two of them (the read pool would show each the last commit, and the same
// deadlines to all).
// No other transaction writes, so none is passed over. fn's error undoes
// only what fn wrote (see writer.go: the batch may run it again).
func (s *Store) UpdateDue(ctx context.Context, now int64, limit int, fn func(calls.Tx, []calls.Deadline) error) (int, error) {
	var n int
	err := s.writeCalls(ctx, func(tx *sqlx.Tx) error {
		n = 0
		// The prepared statement: parsing the query was 5 % of a claim.
		due, err := dueDeadlines(detached(ctx), s.txStmt(tx, s.wst.dueDeadlines).QueryContext, now, limit)
		if err != nil {
			return err
		}
		n = len(due)
		// The claim's changes write their users and events together.
		claim := s.callsTx(tx)
		claim.deferred = &deferredRows{}
		if err := fn(claim, due); err != nil { // even with none: see calls.DeadlineClaimer
			return err
		}
		return claim.flush(detached(ctx))
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// DeadlineBatching has the scheduler fire due deadlines in one pipeline of
// claims of 64 (calls.DeadlineBatcher), where PostgreSQL runs 4 claims of
// 32 at once. One writer runs every transaction in turn, so
// parallel claims only queue behind each other, and a request queued
// behind them waits for all of them: its group commit holds what was
// queued before it and what arrives before the writer takes the batch.
// With one claim of 64, a request waits behind about as much deadline
// work as it did when each deadline was its own request (64 of them in
// flight), while a claim pays for one request and one savepoint over all
// its deadlines. Measured with BenchmarkFireDeadlines on a 2-core VM
// (2026-12-01, before the pipeline), the p99 of a write made while 20,000
// deadlines fire: 1 × 64, 20 ms (the
// per-deadline path: 16–20 ms); 4 × 32, 31–33 ms; 1 × 128, 33–46 ms;
// 2 × 128, 64–66 ms, for only 10–15 % more deadlines per second (what a
// deadline costs is its statements, not its request or commit).
//
// The claims pipeline (calls.ClaimBatching.Pipelined): a claim's fn runs
// on the writer, and every claim queued after it returned sees its
// changes, committed or still in the open batch, so the next claim can
// run while this one is fsynced. One claim at a time had left the writer
// idle for each fsync and each turn of the scheduler. On 2026-12-05: one
// claim at a time, 17,100–17,900 deadlines/s and a write p99 during the
// storm of 8–9 ms; pipelined, 19,300–20,800 deadlines/s and 12–16 ms (a
// write may wait behind two claims). Pipelined
// claims of 32 fire no faster than one claim of 64 (docs/benchmarks.md).
func (s *Store) DeadlineBatching() calls.ClaimBatching {
	return calls.ClaimBatching{Parallel: 1, Batch: 64, Pipelined: true}
}

var _ calls.DeadlineBatcher = (*Store)(nil)

// dueDeadlines runs sqlDueDeadlines with query: on the read pool, or
// prepared in the write transaction.
func dueDeadlines(ctx context.Context, query func(context.Context, ...any) (*sql.Rows, error), now int64, limit int) ([]calls.Deadline, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := query(ctx,
		string(calls.DeadlineTimeout), now, limit,
		string(calls.DeadlineNotReceived), now, limit,
		string(calls.DeadlineCallerOffline), now, limit,
		limit)
	if err != nil {
		return nil, fmt.Errorf("db: due deadlines: %w", err)
	}
	due, err := db.ScanRows(rows, db.ScanDeadline)
	if err != nil {
		return nil, fmt.Errorf("db: due deadlines: %w", err)
	}
	return due, nil
}

// NextDeadline returns the earliest armed deadline of any kind, or 0. Each
// arm reads the first entry of its partial index.
func (s *Store) NextDeadline(ctx context.Context) (int64, error) {
	var next int64
	err := s.rdb.QueryRowContext(ctx, sqlNextDeadline).Scan(&next)
	if err != nil {
		return 0, fmt.Errorf("db: next deadline: %w", err)
	}
	return next, nil
}
