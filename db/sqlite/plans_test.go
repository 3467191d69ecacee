package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
	"callsig/webhooks"
)

// TestQueryPlansUseIndexes guards the indexes the schema comments promise:
// a query rewritten so SQLite no longer uses its index would still pass the
// functional tests, only slowly on a real history.
func TestQueryPlansUseIndexes(t *testing.T) {
	checkPlans(t, openTest(t))
}

// TestQueryPlansUnderProductionStatistics runs the plan checks of
// TestQueryPlansUseIndexes with the planner statistics a node's file
// carries after months in production: the store runs PRAGMA optimize at
// every close, which analyzes a table whose size changed tenfold from a
// sample of the first 2,000 entries of each index (its own analysis
// limit). The sample takes the index's first key for nearly the whole
// table (an endpoint with millions of deliveries counted as 2,001), and a
// table the writer only inserts into keeps the figures of the day it was
// first analyzed (webhook_messages: 5,965 rows beside 4.6 million
// deliveries). These are the figures of such a file (3 million calls, 4.6
// million deliveries); a plan that holds without statistics must hold
// with them too.
func TestQueryPlansUnderProductionStatistics(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, path)
	for _, q := range []string{
		`ANALYZE`, // creates sqlite_stat1
		`DELETE FROM sqlite_stat1`,
		`INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
			('call_users', 'call_users', '6562515 3 1'),
			('call_users', 'call_users_busy', '0 0'),
			('call_users', 'call_users_by_user', '6562515 2001 1'),
			('call_users', 'call_users_invitations', '0 0 0'),
			('call_users', 'call_users_not_received', '0 0'),
			('call_users', 'call_users_timeout', '0 0'),
			('calls', 'calls_caller_offline', '0 0'),
			('calls', 'calls_ended', '2987505 1'),
			('calls', 'calls_presence', '0 0 0'),
			('calls', 'calls_started', '0 0'),
			('calls', 'calls_tracked_started', '0 0'),
			('calls', 'sqlite_autoindex_calls_1', '2987505 1'),
			('events', 'events_by_user', '811250 2001 1'),
			('idempotency_keys', 'idempotency_keys_expiry', '179838 1'),
			('idempotency_keys', 'sqlite_autoindex_idempotency_keys_1', '179838 1001 1'),
			('webhook_deliveries', 'webhook_deliveries_by_endpoint', '4587679 2001 1'),
			('webhook_deliveries', 'webhook_deliveries_by_endpoint_status', '4587679 2001 2001 1'),
			('webhook_deliveries', 'webhook_deliveries_by_message', '4587679 2'),
			('webhook_deliveries', 'webhook_deliveries_by_status_age', '4587679 2001 2'),
			('webhook_deliveries', 'webhook_deliveries_leased', '0 0'),
			('webhook_deliveries', 'webhook_deliveries_pending', '100000 2001 1'),
			('webhook_endpoints', 'sqlite_autoindex_webhook_endpoints_1', '2 1'),
			('webhook_messages', 'sqlite_autoindex_webhook_messages_1', '5965 1')`,
	} {
		if _, err := s.wdb.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.Close() // its PRAGMA optimize leaves the figures: the tables are as analyzed
	checkPlans(t, openAt(t, path))
}

// checkPlans checks the plan of every hot statement on s.
func checkPlans(t *testing.T, s *Store) {
	t.Helper()
	// The pending-invitation lookups walk migration 0002's partial index from
	// the user's newest invitation and read events by primary key: never the
	// user's events or history.
	invitation := []string{"events_by_user", "SCAN e"}
	deliveries, deliveriesArgs := db.DeliveriesQuery("wh", webhooks.DeliveryQuery{Limit: 10})
	failed, failedArgs := db.DeliveriesQuery("wh", webhooks.DeliveryQuery{Status: webhooks.DeliveryFailed, Limit: 10})
	for _, q := range []struct {
		name, query string
		args        []any
		indexes     []string // every one must appear in the plan
		forbid      []string // none may
		sorts       bool     // a TEMP B-TREE is expected (a bounded merge)
	}{
		// Production statements only, never copies: a copy keeps passing
		// after the real query changed.
		{"list calls", sqlListCalls, []any{"u", 10, 10}, []string{"call_users_by_user"}, nil, false},
		{"due deadlines", sqlDueDeadlines, []any{"t", 1, 10, "n", 1, 10, "c", 1, 10, 10},
			[]string{"call_users_timeout", "call_users_not_received", "calls_caller_offline"}, nil, true},
		{"next deadline", sqlNextDeadline, nil, []string{"call_users_timeout", "call_users_not_received", "calls_caller_offline"}, nil, false},
		{"caller's offline calls", sqlCallerOfflineCalls, []any{"u", 0, 200}, []string{"calls_presence (caller=? AND seq>?)"}, []string{"SCAN c"}, false},
		{"tracked offline calls", sqlTrackedCallerOfflineCalls, []any{0, 10}, []string{"calls_tracked_started"}, []string{"SCAN c"}, false},
		{"idempotency record", selectIdempotency, []any{"s", "k", 1}, []string{"sqlite_autoindex_idempotency_keys_1"}, nil, false},
		{"replay", sqlEventsAfter, []any{"u", 1, 100, 10}, []string{"events_by_user"}, nil, false},
		{"pending invitations", sqlPendingInvitations, []any{"u", 100}, []string{"USING INDEX call_users_invitations"}, invitation, false},
		{"unreceived invitations", sqlUnreceivedInvitations, []any{"u", 10, 100}, []string{"USING INDEX call_users_invitations"}, invitation, false},
		{"event recipients", sqlEventRecipients, []any{1, 2, 3}, []string{"USING INTEGER PRIMARY KEY"}, nil, true},
		// The first ids in rowid order (a bounded scan), no sort.
		{"prune events", sqlPruneEvents, []any{1, 10}, []string{"USING INTEGER PRIMARY KEY"}, []string{"TEMP B-TREE"}, false},
		{"outbox claim per endpoint", sqlClaimEndpoint, []any{"wh", 1, 1, 4}, []string{"webhook_deliveries_pending"}, nil, false},
		{"outbox next due per endpoint", sqlNextDueByEndpoint, []any{1}, []string{"webhook_deliveries_pending"}, nil, false},
		{"outbox next lease end", sqlNextLeaseEnd, []any{1}, []string{"webhook_deliveries_leased"}, nil, false},
		// A deletion's wait for the attempts in flight: the leases alone,
		// never the endpoint's delivery log.
		{"outbox attempts in flight", sqlAttemptsInFlight, []any{1, "wh"}, []string{"webhook_deliveries_leased (locked_until>?)"}, nil, false},
		{"outbox pending count", sqlPendingCount, nil, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, nil, false},
		{"outbox oldest pending", sqlOldestPending, nil, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, nil, false},
		{"outbox expire", sqlExpireDeliveries, []any{"r", 1, 1, 10}, []string{"webhook_deliveries_by_status_age (status=? AND created_at<?)"}, nil, false},
		{"outbox prune", sqlPruneDeliveries, []any{1, 10}, []string{"COVERING INDEX webhook_deliveries_by_status_age"}, nil, false},
		{"outbox dead endpoints", sqlFailDeadEndpoints, []any{1, 10}, []string{"webhook_deliveries_by_endpoint_status (endpoint_id=? AND status=?)"}, []string{"SCAN webhook_deliveries"}, false},
		{"outbox fail an endpoint's pending", sqlFailPending, []any{"r", "wh", 1, 10}, []string{"webhook_deliveries_by_endpoint_status (endpoint_id=? AND status=?)"}, []string{"SCAN webhook_deliveries"}, false},
		// An endpoint's backlog: its count from the pending index alone,
		// the cut walking its deliveries back from the newest with no
		// sort, and the drop a range of the pending index.
		{"outbox backlog count", sqlPendingCountOf, []any{"wh", 10}, []string{"COVERING INDEX webhook_deliveries_pending (endpoint_id=?)"}, nil, false},
		{"outbox backlog cut", sqlBacklogCut, []any{"wh", 10}, []string{"webhook_deliveries_by_endpoint (endpoint_id=?)"}, nil, false},
		// An endpoint's deliveries newest first, all or of one status: a
		// range of an index in its order, never a filter over the log.
		{"deliveries of an endpoint", deliveries, deliveriesArgs, []string{"webhook_deliveries_by_endpoint (endpoint_id>? AND endpoint_id<?)"}, nil, false},
		{"deliveries of an endpoint by status", failed, failedArgs, []string{"webhook_deliveries_by_endpoint_status (endpoint_id=? AND status>? AND status<?)"}, nil, false},
		{"outbox backlog drop", sqlDropDeliveries, []any{"r", "wh", 10, 1, 10}, []string{"webhook_deliveries_pending (endpoint_id=?)"}, nil, false},
		// The busy check looks each invitee up in 0005's partial index: never
		// the invitee's history (call_users_by_user) nor a scan, and only up
		// to the first row (an EXISTS, a scalar subquery): a join read all
		// the busy rows of a user accepted in very many started calls.
		{"busy users", sqlBusyUsers, []any{`["bob","carol"]`, "c"}, []string{"call_users_busy (user_id=?)", "CORRELATED SCALAR SUBQUERY"}, []string{"call_users_by_user", "SCAN u", "SCAN c"}, false},
		{"busy user", sqlUserBusy, []any{"bob", "c"}, []string{"call_users_busy (user_id=?)"}, []string{"call_users_by_user", "SCAN u", "SCAN c"}, false},
		// A claim of deadlines loads its calls and their users by key, the
		// keys one JSON array each (the users sorted into list order).
		{"calls by id", sqlCallsByID, []any{`["a","b"]`}, []string{"sqlite_autoindex_calls_1 (id=?)"}, []string{"SCAN calls"}, false},
		{"users of calls", sqlUsersOfCalls, []any{`[1,2]`}, []string{"PRIMARY KEY (call_seq=?)"}, []string{"SCAN call_users"}, true},
		// The gauge's counts read their partial indexes, never the table.
		{"count started calls", sqlCountStarted, nil, []string{"COVERING INDEX calls_started"}, nil, false},
		{"count ended calls", sqlCountEnded, nil, []string{"COVERING INDEX calls_ended"}, nil, false},
		// The retention of ended calls walks migration 0006's index from
		// the oldest, never the table.
		{"prune calls", sqlPruneCalls, []any{1, 10}, []string{"calls_ended (end_time<?)"}, []string{"SCAN calls"}, false},
		{"prune their users", sqlPruneCallUsers, []any{1, 10}, []string{"calls_ended (end_time<?)", "PRIMARY KEY (call_seq=?)"}, []string{"SCAN call_users"}, false},
		{"free an ended call's users", sqlClearBusy, []any{1}, []string{"USING PRIMARY KEY (call_seq=?)"}, nil, false},
	} {
		p := queryPlan(t, s, q.query, q.args...)
		t.Logf("%s: %s", q.name, p)
		for _, index := range q.indexes {
			if !strings.Contains(p, index) {
				t.Errorf("%s: plan %q, want it to use %s", q.name, p, index)
			}
		}
		for _, f := range q.forbid {
			if strings.Contains(p, f) {
				t.Errorf("%s: plan %q, want no %s", q.name, p, f)
			}
		}
		if strings.Contains(p, "TEMP B-TREE") && !q.sorts {
			t.Errorf("%s: plan %q sorts, want the index order", q.name, p)
		}
	}
}

// queryPlan returns the EXPLAIN QUERY PLAN details of query, joined by "; ".
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("explain %q: %v", query, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "; ")
}

// Migration 0011 moves the count of started calls to an index by seq: a
// database upgraded with started and ended calls in it counts them as
// before, and its calls_started_by_caller, which every call's start and
// end kept up to date, is gone.
func TestMigration0011CountsStartedCallsBySeq(t *testing.T) {
	path, raw := schemaBefore(t, "0011")
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time) VALUES
			('a', 'alice', 'general', 'started', 60, 1000, 0),
			('b', 'bob', 'general', 'ended', 60, 1000, 2000),
			('c', 'carol', 'advanced', 'started', 60, 1000, 0)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s := openAt(t, path)
	started, ended, err := s.CallCounts(context.Background())
	if err != nil || started != 2 || ended != 1 {
		t.Fatalf("CallCounts after the upgrade = %d started, %d ended (%v); want 2, 1", started, ended, err)
	}
	if n := count(t, s, "sqlite_master WHERE type = 'index' AND name = 'calls_started_by_caller'"); n != 0 {
		t.Fatalf("calls_started_by_caller is still there after 0011")
	}
}

// From exactCountBelow ended calls on, a scrape counts them again only
// every endedCountEvery (a count walks their whole index: 70-260 ms at 3
// million calls); below, every scrape counts them.
func TestEndedCallsCountedOnceAMinuteWhenMany(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	end := func(id string) {
		ch := storetest.NewCall(id, "alice", 1000, "bob")
		ch.Call.State, ch.Call.EndTime = calls.CallEnded, 2000
		storetest.Save(t, s, ch)
	}
	end("a")
	if _, ended, err := s.CallCounts(ctx); err != nil || ended != 1 {
		t.Fatalf("CallCounts: %d ended (%v), want 1", ended, err)
	}
	end("b")
	if _, ended, _ := s.CallCounts(ctx); ended != 2 {
		t.Fatalf("CallCounts below the bound: %d ended, want 2 (counted at every scrape)", ended)
	}

	s.endedCount.n = exactCountBelow // as if the last count had found that many
	s.endedCount.at = time.Now()
	end("c")
	if _, ended, _ := s.CallCounts(ctx); ended != exactCountBelow {
		t.Fatalf("CallCounts above the bound within a minute: %d ended, want the last count %d", ended, exactCountBelow)
	}
	s.endedCount.at = time.Now().Add(-endedCountEvery)
	if _, ended, _ := s.CallCounts(ctx); ended != 3 {
		t.Fatalf("CallCounts a minute on: %d ended, want 3 (counted again)", ended)
	}
}
