package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/internal/pgtest"
	"callsig/webhooks"
)

// An endpoint's deliveries, newest first, are a range of
// webhook_deliveries_by_endpoint, and those of one status one of
// webhook_deliveries_by_endpoint_status (0011), also in the generic plan a
// prepared statement turns to: ordered by id alone, that plan walked the
// primary key back through every endpoint's deliveries, and filtered on
// the way back along the endpoint's log, an admin's look for its few
// failed deliveries read every delivered one.
func TestDeliveriesByStatusPlanReadsTheirIndexRange(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{
		`INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('m', 'call.created', '\x7b7d', 1)`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'busy', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'busy', 'failed', 0, g FROM generate_series(1, 20) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'other', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		`ANALYZE webhook_deliveries`,
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
	byStatus, _ := db.DeliveriesQuery("busy", webhooks.DeliveryQuery{Status: webhooks.DeliveryFailed, Limit: 100})
	all, _ := db.DeliveriesQuery("busy", webhooks.DeliveryQuery{Limit: 100})
	for _, q := range []string{
		`SET LOCAL plan_cache_mode = force_generic_plan`,
		`PREPARE by_status(text, text, int) AS ` + sqlx.Rebind(sqlx.DOLLAR, byStatus),
		`PREPARE all_of(text, text, int) AS ` + sqlx.Rebind(sqlx.DOLLAR, all),
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, c := range []struct{ name, explain, index string }{
		{"by status", `EXPLAIN EXECUTE by_status('busy', 'failed', 100)`, "webhook_deliveries_by_endpoint_status"},
		{"all", `EXPLAIN EXECUTE all_of('busy', 'busy', 100)`, "webhook_deliveries_by_endpoint "},
	} {
		var lines []string
		if err := tx.SelectContext(ctx, &lines, c.explain); err != nil {
			t.Fatal(err)
		}
		plan := strings.Join(lines, "\n")
		if !strings.Contains(plan, c.index) || strings.Contains(plan, "webhook_deliveries_pkey") || strings.Contains(plan, "Seq Scan on webhook_deliveries") {
			t.Errorf("generic plan of the listing (%s):\n%s\nwant a range of %s", c.name, plan, c.index)
		}
	}
}
