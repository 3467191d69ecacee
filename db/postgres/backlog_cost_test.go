package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"callsig/internal/pgtest"
)

// rowsRead is how many rows the scans of an EXPLAIN (ANALYZE, FORMAT JSON)
// plan read: those they returned and those their filters removed, over
// all their loops; with the nodes that read, for the failure message.
func rowsRead(node map[string]any) (int, string) {
	n, what := 0, ""
	num := func(k string) int { f, _ := node[k].(float64); return int(f) }
	if _, ok := node["Relation Name"]; ok || node["Node Type"] == "CTE Scan" {
		loops := max(num("Actual Loops"), 1)
		n = (num("Actual Rows") + num("Rows Removed by Filter")) * loops
		what = fmt.Sprintf("%s %v: %d; ", node["Node Type"], node["Index Name"], n)
	}
	plans, _ := node["Plans"].([]any)
	for _, p := range plans {
		m, w := rowsRead(p.(map[string]any))
		n, what = n+m, what+w
	}
	return n, what
}

// An endpoint's backlog costs each pass what the bound keeps, not what
// the backlog holds: the count stops past keep, and the cut walks the
// endpoint's deliveries back from the newest, past the kept ones, also in
// the generic plan a prepared statement turns to as in the custom ones. A plan that reads (and
// sorts) all of a dead receiver's pending deliveries takes seconds at a
// few million, a backlog the bound exists for (the one a receiver down
// since before an upgrade left), and fails every pass once it passes
// CALLSIG_PG_STATEMENT_TIMEOUT: the backlog is then never cut. And an
// endpoint within its bound, read by a scan of the table, would cost each
// pass the whole outbox.
func TestBacklogCostIsBoundedByTheLimit(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{MaxConns: 2, StatementTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{
		`INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('m', 'call.created', '\x7b7d', 1)`,
		// A dead receiver's backlog, then a busy endpoint's deliveries,
		// then a small one's.
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'dead', 'pending', g, g FROM generate_series(1, 100000) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'ok', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'small', 'pending', g, g FROM generate_series(1, 50) g`,
		`ANALYZE webhook_deliveries`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const keep = 100
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		for _, c := range []struct {
			name, query, endpoint string
			max                   int
		}{
			{"count", webhookSQL.PendingCount, "dead", 2 * keep},
			{"count", webhookSQL.PendingCount, "small", 2 * keep},
			{"cut", webhookSQL.BacklogCut, "dead", 2 * keep},
			{"cut", webhookSQL.BacklogCut, "small", 2 * keep},
		} {
			tx, err := s.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var plan []struct {
				Plan map[string]any
			}
			var raw string
			for _, q := range []string{
				`SET LOCAL plan_cache_mode = ` + mode,
				`PREPARE q(text, int) AS ` + c.query,
			} {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if err := tx.GetContext(ctx, &raw, fmt.Sprintf(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q('%s', %d)`, c.endpoint, keep)); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `DEALLOCATE q`); err != nil {
				t.Fatal(err)
			}
			_ = tx.Rollback()
			if err := json.Unmarshal([]byte(raw), &plan); err != nil || len(plan) != 1 {
				t.Fatalf("%s: %v", raw, err)
			}
			if n, what := rowsRead(plan[0].Plan); n > c.max {
				t.Errorf("%s: the %s of %s's backlog (keep %d) read %d rows (%s), want %d at most", mode, c.name, c.endpoint, keep, n, what, c.max)
			}
		}
	}
}
