package postgres

import (
	"context"
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
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
