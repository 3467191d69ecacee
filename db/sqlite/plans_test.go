package sqlite

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
		name, query string
		args        []any
		indexes     []string // every one must appear in the plan
		sorts       bool     // a TEMP B-TREE is expected (a bounded merge)
	}{
		// Production statements only, never copies: a copy keeps passing
		// after the real query changed.
		{"list calls", sqlListCalls, []any{"u", 10, 10}, []string{"call_users_by_user"}, false},
		{"due deadlines", sqlDueDeadlines, []any{"t", 1, 10, "n", 1, 10, "c", 1, 10, 10},
			[]string{"call_users_timeout", "call_users_not_received", "calls_caller_offline"}, true},
		{"next deadline", sqlNextDeadline, nil, []string{"call_users_timeout", "call_users_not_received", "calls_caller_offline"}, false},
		{"replay", sqlEventsAfter, []any{"u", 1, 10}, []string{"events_by_user"}, false},
		{"prune events", sqlPruneEvents, []any{1, 10}, []string{"events_by_time"}, false},
		{"outbox claim per endpoint", sqlClaimEndpoint, []any{"wh", 1, 1, 4}, []string{"webhook_deliveries_pending"}, false},
		{"outbox next due per endpoint", sqlNextDueByEndpoint, []any{1}, []string{"webhook_deliveries_pending"}, false},
		{"outbox next lease end", sqlNextLeaseEnd, []any{1}, []string{"webhook_deliveries_leased"}, false},
		{"outbox pending count", sqlPendingCount, nil, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, false},
		{"outbox oldest pending", sqlOldestPending, nil, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, false},
		{"outbox prune", sqlPruneDeliveries, []any{1, 10}, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, false},
		{"outbox dead endpoints", sqlFailDeadEndpoints, []any{1}, []string{"webhook_deliveries_pending"}, false},
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
		p := strings.Join(plan, "; ")
		for _, index := range q.indexes {
			if !strings.Contains(p, index) {
				t.Errorf("%s: plan %q, want it to use %s", q.name, p, index)
			}
		}
		if strings.Contains(p, "TEMP B-TREE") && !q.sorts {
			t.Errorf("%s: plan %q sorts, want the index order", q.name, p)
		}
	}
}

// The production caller-offline and idempotency queries use their indexes
// (no scan of the whole call history or key table, no sort).
func TestCallerOfflineAndIdempotencyPlans(t *testing.T) {
	s := openTest(t)
	for _, q := range []struct {
		name, query, index string
		args               []any
	}{
		{"caller's offline calls", sqlCallerOfflineCalls, "calls_started_by_caller", []any{"u"}},
		{"tracked offline calls", sqlTrackedCallerOfflineCalls, "calls_tracked_started", []any{0, 10}},
		{"idempotency record", selectIdempotency, "sqlite_autoindex_idempotency_keys_1", []any{"s", "k", 1}},
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
		if p := strings.Join(plan, "; "); !strings.Contains(p, q.index) || strings.Contains(p, "TEMP B-TREE") || strings.Contains(p, "SCAN c") {
			t.Errorf("%s: plan %q, want it to use %s without a scan or sort", q.name, p, q.index)
		}
	}
}
