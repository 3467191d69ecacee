package db

import (
	"strings"
	"testing"
)

// TestQueryPlansUseIndexes guards the indexes the schema comments promise:
// a query rewritten so SQLite no longer uses its index would still pass the
// functional tests, only slowly on a real history.
func TestQueryPlansUseIndexes(t *testing.T) {
	s := openTest(t)
	for _, q := range []struct {
		name, query, index string
		args               []any
	}{
		{"list calls", `SELECT ` + callColumnsC + ` FROM call_users u JOIN calls c ON c.seq = u.call_seq
			WHERE u.user_id = ? AND u.call_seq < ? ORDER BY u.call_seq DESC LIMIT ?`, "call_users_by_user", []any{"u", 10, 10}},
		{"due timeouts", `SELECT timeout_at FROM call_users WHERE timeout_at > 0 AND timeout_at <= ? ORDER BY timeout_at`, "call_users_timeout", []any{1}},
		{"due not-received", `SELECT not_received_at FROM call_users WHERE not_received_at > 0 AND not_received_at <= ? ORDER BY not_received_at`, "call_users_not_received", []any{1}},
		{"due caller offline", `SELECT caller_offline_at FROM calls WHERE caller_offline_at > 0 AND caller_offline_at <= ? ORDER BY caller_offline_at`, "calls_caller_offline", []any{1}},
		{"caller's started calls", `SELECT seq FROM calls c WHERE c.caller = ? AND c.state = 'started'`, "calls_started_by_caller", []any{"u"}},
		{"replay", `SELECT id FROM events WHERE user_id = ? AND id > ? ORDER BY id`, "events_by_user", []any{"u", 1}},
		{"prune", `SELECT id FROM events WHERE time < ? ORDER BY time LIMIT 10`, "events_by_time", []any{1}},
		// The outbox's production statements (db/webhooks.go), not copies.
		{"outbox claim per endpoint", sqlClaimEndpoint, "webhook_deliveries_pending", []any{"wh", 1, 1, 4}},
		{"outbox next due per endpoint", sqlNextDueByEndpoint, "webhook_deliveries_pending", []any{1}},
		{"outbox next lease end", sqlNextLeaseEnd, "webhook_deliveries_leased", []any{1}},
		{"outbox pending count", sqlPendingCount, "COVERING INDEX webhook_deliveries_by_status_age", nil},
		{"outbox oldest pending", sqlOldestPending, "COVERING INDEX webhook_deliveries_by_status_age", nil},
		{"outbox prune", sqlPruneDeliveries, "COVERING INDEX webhook_deliveries_by_status_age", []any{1, 10}},
		{"outbox dead endpoints", sqlFailDeadEndpoints, "webhook_deliveries_pending", []any{1}},
	} {
		rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+q.query, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		t.Logf("%s: %s", q.name, strings.Join(plan, "; "))
		if p := strings.Join(plan, "; "); !strings.Contains(p, q.index) || strings.Contains(p, "TEMP B-TREE") {
			t.Errorf("%s: plan %q, want it to use %s without a sort", q.name, p, q.index)
		}
	}
}
