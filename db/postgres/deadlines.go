package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"

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

var _ calls.DeadlineClaimer = (*Store)(nil)

// sqlClaimDue reads one kind of due deadline (%s: its column on
// call_users, or on calls) along its partial index, earliest first, and
// locks the calls: FOR UPDATE OF c SKIP LOCKED passes over a call another
// transaction holds (another node firing it, or a request changing it:
// a later round sees it again if it is still due), and LIMIT counts only
// the rows locked.
const (
	sqlClaimUserDeadlines = `SELECT c.id, u.user_id, $1::text, u.%[1]s
		FROM call_users u JOIN calls c ON c.seq = u.call_seq
		WHERE u.%[1]s > 0 AND u.%[1]s <= $2 ORDER BY u.%[1]s LIMIT $3
		FOR UPDATE OF c SKIP LOCKED`
	sqlClaimCallerOffline = `SELECT id, '', $1::text, caller_offline_at
		FROM calls WHERE caller_offline_at > 0 AND caller_offline_at <= $2
		ORDER BY caller_offline_at LIMIT $3
		FOR UPDATE SKIP LOCKED`
)

// UpdateDue claims up to limit due deadlines and runs fn on them in the
// claiming transaction (calls.DeadlineClaimer): the calls are locked
// FOR UPDATE SKIP LOCKED while they are read, so nodes firing the same
// due deadlines take disjoint calls and never wait for each other; each
// deadline fires once, and the pure Expire still finds a deadline cleared
// by a change that committed meanwhile. Like Update, it runs fn again on a
// deadlock or serialization failure.
func (s *Store) UpdateDue(ctx context.Context, now int64, limit int, fn func(calls.Tx, []calls.Deadline) error) (int, error) {
	if limit <= 0 {
		limit = 100
	}
	var n int
	err := s.retryConflicts(ctx, func() error {
		return s.inPipeTx(ctx, func(p *pipe) error {
			n = 0
			tx, ctx, err := p.ready(ctx)
			if err != nil {
				return err
			}
			var due []calls.Deadline
			kinds := []struct {
				kind  calls.DeadlineKind
				query string
			}{
				{calls.DeadlineTimeout, fmt.Sprintf(sqlClaimUserDeadlines, "timeout_at")},
				{calls.DeadlineNotReceived, fmt.Sprintf(sqlClaimUserDeadlines, "not_received_at")},
				{calls.DeadlineCallerOffline, sqlClaimCallerOffline},
			}
			// Each kind up to the whole limit, then the earliest limit of
			// them all: read in turn, each up to what the kinds before it
			// left, a claim full of timeouts handed none of the earlier or
			// same-instant not-received checks of their users (which then
			// fired stale), where SQLite's claim (sqlDueDeadlines) ranks
			// every kind together. The calls of the rows left out stay
			// locked until this commit; another node's claim passes over
			// them for one round.
			for _, k := range kinds {
				rows, err := tx.QueryContext(ctx, k.query, string(k.kind), now, limit)
				if err != nil {
					return fmt.Errorf("db: claim %s deadlines: %w", k.kind, err)
				}
				got, err := db.ScanRows(rows, db.ScanDeadline)
				if err != nil {
					return fmt.Errorf("db: claim %s deadlines: %w", k.kind, err)
				}
				due = append(due, got...)
			}
			// The order DueDeadlines reads and calls.DueDeadlines fires: at
			// one instant, a user's not-received check before its timeout.
			slices.SortFunc(due, func(a, b calls.Deadline) int {
				return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(a.Kind, b.Kind),
					cmp.Compare(a.CallID, b.CallID), cmp.Compare(a.UserID, b.UserID))
			})
			due = due[:min(len(due), limit)]
			n = len(due)
			if len(due) > 0 {
				if due, err = stillDue(ctx, tx, due); err != nil {
					return err
				}
			}
			return fn(newCallsTx(p), due)
		})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// sqlCallDeadlines reads the deadlines of calls as they are now.
const sqlCallDeadlines = `SELECT c.id, COALESCE(u.user_id, ''), COALESCE(u.timeout_at, 0),
		COALESCE(u.not_received_at, 0), c.caller_offline_at
	FROM calls c LEFT JOIN call_users u ON u.call_seq = c.seq WHERE c.id = ANY($1)`

// stillDue keeps the claimed deadlines that are still armed as claimed.
// The claim read call_users in its statement's snapshot, and locked the
// calls after: a call another transaction fired and committed in between
// is locked all the same, with its deadline read from before. Read again
// now, in a new snapshot and with the calls locked (every change of a call
// locks it first), what is armed is what holds: a deadline fired
// meanwhile is not handed out a second time.
func stillDue(ctx context.Context, tx sqlx.QueryerContext, due []calls.Deadline) ([]calls.Deadline, error) {
	ids := make([]string, 0, len(due))
	for _, d := range due {
		ids = append(ids, d.CallID)
	}
	rows, err := tx.QueryContext(ctx, sqlCallDeadlines, ids)
	if err != nil {
		return nil, fmt.Errorf("db: claimed deadlines: %w", err)
	}
	defer rows.Close()
	type key struct {
		call, user string
		kind       calls.DeadlineKind
	}
	armed := map[key]int64{}
	for rows.Next() {
		var call, user string
		var timeout, notReceived, callerOffline int64
		if err := rows.Scan(&call, &user, &timeout, &notReceived, &callerOffline); err != nil {
			return nil, fmt.Errorf("db: claimed deadlines: %w", err)
		}
		armed[key{call, user, calls.DeadlineTimeout}] = timeout
		armed[key{call, user, calls.DeadlineNotReceived}] = notReceived
		armed[key{call, "", calls.DeadlineCallerOffline}] = callerOffline
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: claimed deadlines: %w", err)
	}
	kept := due[:0]
	for _, d := range due {
		if at := armed[key{d.CallID, d.UserID, d.Kind}]; at > 0 && at == d.At {
			kept = append(kept, d)
		}
	}
	return kept, nil
}

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
