package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"callsig/internal/pgtest"
)

// The end of a call clears its users' busy flags along the primary key,
// even with a generic plan made on statistics taken while few users were
// busy: with the call alone in the condition, that plan read the partial
// index of every busy user (call_users_busy), 12 ms at 100,000 of them.
func TestClearBusyPlanProbesThePrimaryKey(t *testing.T) {
	ctx := context.Background()
	s := busyFixture(t)
	defer s.Close()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	for _, q := range []string{
		`SET LOCAL plan_cache_mode = force_generic_plan`,
		`PREPARE clear_busy(text, text[]) AS ` + sqlClearBusy,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var lines []string
	if err := tx.SelectContext(ctx, &lines, `EXPLAIN EXECUTE clear_busy('b500', '{w500}')`); err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, "Index Cond: (call_seq = ") || strings.Contains(plan, "call_users_busy") {
		t.Errorf("plan of sqlClearBusy:\n%s\nwant a probe of call_users_pkey", plan)
	}
}

// busyFixture opens a store whose statistics were taken with 200 users
// not busy, then makes 20,000 users busy (calls b1…, users w1…).
func busyFixture(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`ALTER TABLE calls SET (autovacuum_enabled = false)`,
		`ALTER TABLE call_users SET (autovacuum_enabled = false)`,
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time)
			SELECT 'a' || g, 'u' || g, 'general', 'started', 30, 1 FROM generate_series(1, 200) g`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, update_time, busy)
			SELECT seq, caller, 0, 'accepted', 1, false FROM calls`,
		`ANALYZE calls`,
		`ANALYZE call_users`,
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time)
			SELECT 'b' || g, 'w' || g, 'general', 'started', 30, 1 FROM generate_series(1, 20000) g`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, update_time, busy)
			SELECT seq, caller, 0, 'accepted', 1, true FROM calls WHERE id LIKE 'b%'`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return s
}

// The busy check keeps a generic plan (it was planned afresh at half its
// executions, busyQueries), and that plan probes call_users_busy once per
// user rather than reading every busy user, for every length of the list.
func TestBusyCheckKeepsAGenericPlanThatProbes(t *testing.T) {
	ctx := context.Background()
	s := busyFixture(t)
	defer s.Close()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for n, q := range busyQueries {
		name := fmt.Sprintf("busy_%d", n)
		types := strings.TrimSuffix(strings.Repeat("text, ", n+1), ", ")
		if _, err := conn.ExecContext(ctx, `PREPARE `+name+`(`+types+`) AS `+q); err != nil {
			t.Fatalf("prepare %d: %v", n, err)
		}
		args := "'b500'" + strings.Repeat(", 'w500'", n)
		for range 10 {
			var got []string
			if err := conn.SelectContext(ctx, &got, `EXECUTE `+name+`(`+args+`)`); err != nil {
				t.Fatalf("execute %d: %v", n, err)
			}
			if len(got) != 0 {
				t.Fatalf("busy check of w500 but for its own call b500 = %v, want none", got)
			}
		}
		var generic int
		if err := conn.GetContext(ctx, &generic, `SELECT generic_plans FROM pg_prepared_statements WHERE name = $1`, name); err != nil {
			t.Fatal(err)
		}
		if generic == 0 {
			t.Errorf("busy check for %d users: no generic plan in 10 executions", n)
		}
		var lines []string
		if err := conn.SelectContext(ctx, &lines, `EXPLAIN EXECUTE `+name+`('b1'`+strings.Repeat(", 'w500'", n)+`)`); err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, "call_users_busy") || !strings.Contains(plan, "Index Cond: (user_id = ") ||
			strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Hash") {
			t.Errorf("plan of the busy check for %d users:\n%s\nwant a probe of call_users_busy per user", n, plan)
		}
	}
}

// The /metrics gauge counts the started calls along the partial index of
// 0009 (calls_started), never by reading the ended calls, which are
// nearly every row of a database in use.
func TestStartedCallsCountedAlongTheirIndex(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time)
			SELECT 'e' || g, 'u' || (g % 1000), 'general', 'ended', 30, 1, 2 FROM generate_series(1, 20000) g`,
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time)
			SELECT 's' || g, 'u' || g, 'general', 'started', 30, 1 FROM generate_series(1, 50) g`,
		`ANALYZE calls`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var lines []string
	if err := s.db.SelectContext(ctx, &lines, `EXPLAIN SELECT count(*) FROM calls WHERE state = 'started'`); err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, "calls_started") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("plan of the started-calls count:\n%s\nwant a scan of calls_started", plan)
	}
	if started, _, err := s.CallCounts(ctx); err != nil || started != 50 {
		t.Fatalf("CallCounts: %d started (%v), want 50", started, err)
	}
}
