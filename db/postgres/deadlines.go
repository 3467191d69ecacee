package postgres

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/db"
)

// sqlDueDeadlines reads each kind of deadline from its own partial index,
// at most limit of each, then merges them.
const sqlDueDeadlines = `
		SELECT * FROM (
			(SELECT c.id, u.user_id, $1::text AS kind, u.timeout_at AS at
			FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.timeout_at > 0 AND u.timeout_at <= $2 ORDER BY u.timeout_at LIMIT $3)
		UNION ALL
			(SELECT c.id, u.user_id, $4::text, u.not_received_at
			FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.not_received_at > 0 AND u.not_received_at <= $2 ORDER BY u.not_received_at LIMIT $3)
		UNION ALL
			(SELECT id, '', $5::text, caller_offline_at
			FROM calls
			WHERE caller_offline_at > 0 AND caller_offline_at <= $2 ORDER BY caller_offline_at LIMIT $3)
		) d
		ORDER BY at, kind COLLATE "C", id COLLATE "C", user_id COLLATE "C" LIMIT $3`

// sqlNextDeadline reads the first entry of each deadline index.
const sqlNextDeadline = `SELECT COALESCE(LEAST(
		(SELECT min(timeout_at) FROM call_users WHERE timeout_at > 0),
		(SELECT min(not_received_at) FROM call_users WHERE not_received_at > 0),
		(SELECT min(caller_offline_at) FROM calls WHERE caller_offline_at > 0)), 0)`

// DueDeadlines returns up to limit deadlines with At <= now, earliest first
// (limit <= 0: 100). Every node may read the same ones: firing one goes
// through Service.Expire, whose transaction locks the call (callsTx.Call,
// FOR UPDATE) and finds the deadline cleared when another node fired it
// first, so it takes effect once.
func (s *Store) DueDeadlines(ctx context.Context, now int64, limit int) ([]calls.Deadline, error) {
	if limit <= 0 {
		limit = 100
	}
	q, err := s.query()
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, sqlDueDeadlines, string(calls.DeadlineTimeout), now, limit,
		string(calls.DeadlineNotReceived), string(calls.DeadlineCallerOffline))
	if err != nil {
		return nil, s.failed(fmt.Errorf("db: due deadlines: %w", err))
	}
	due, err := db.ScanRows(rows, db.ScanDeadline)
	if err != nil {
		return nil, s.failed(fmt.Errorf("db: due deadlines: %w", err))
	}
	return due, nil
}

// NextDeadline returns the earliest armed deadline of any kind, or 0.
func (s *Store) NextDeadline(ctx context.Context) (int64, error) {
	q, err := s.query()
	if err != nil {
		return 0, err
	}
	var next int64
	if err := q.QueryRowContext(ctx, sqlNextDeadline).Scan(&next); err != nil {
		return 0, s.failed(fmt.Errorf("db: next deadline: %w", err))
	}
	return next, nil
}
