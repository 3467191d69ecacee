package postgres

import (
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/webhooks"
)

// An endpoint's deliveries, newest first, are a range of
// webhook_deliveries_by_endpoint, and those of one status one of
// webhook_deliveries_by_endpoint_status (0011), also in the generic plan a
// prepared statement turns to: ordered by id alone, that plan walked the
// primary key back through every endpoint's deliveries, and filtered on
// the way back along the endpoint's log, an admin's look for its few
// failed deliveries read every delivered one. Where the status is common
// among all deliveries (another endpoint's failed backlog) the planner
// took the endpoint's share of it for as common, and walked the primary
// key back even so: the status is a range of one too.
func TestDeliveriesByStatusPlanReadsTheirIndexRange(t *testing.T) {
	s := storeWith(t, Options{MaxConns: 2},
		`INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('m', 'call.created', '\x7b7d', 1)`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'busy', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'busy', 'failed', 0, g FROM generate_series(1, 20) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'other', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		// A receiver long down: its backlog failed, so failed deliveries
		// are common overall while 'busy' has 20 of them.
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'down', 'failed', 0, g FROM generate_series(1, 50000) g`,
		`ANALYZE webhook_deliveries`)
	byStatus, _ := db.DeliveriesQuery("busy", webhooks.DeliveryQuery{Status: webhooks.DeliveryFailed, Limit: 100})
	all, _ := db.DeliveriesQuery("busy", webhooks.DeliveryQuery{Limit: 100})
	plans := genericPlans(t, s, []string{
		`PREPARE by_status(text, text, text, int) AS ` + sqlx.Rebind(sqlx.DOLLAR, byStatus),
		`PREPARE all_of(text, text, int) AS ` + sqlx.Rebind(sqlx.DOLLAR, all),
	}, `EXPLAIN EXECUTE by_status('busy', 'failed', 'failed', 100)`, `EXPLAIN EXECUTE all_of('busy', 'busy', 100)`)
	for i, c := range []struct{ name, index string }{
		{"by status", "webhook_deliveries_by_endpoint_status"},
		{"all", "webhook_deliveries_by_endpoint "},
	} {
		if p := plans[i]; !strings.Contains(p, c.index) || strings.Contains(p, "webhook_deliveries_pkey") || strings.Contains(p, "Seq Scan on webhook_deliveries") {
			t.Errorf("generic plan of the listing (%s):\n%s\nwant a range of %s", c.name, p, c.index)
		}
	}
}
