package postgres

import (
	"strings"
	"testing"
)

// The cut of an endpoint's backlog reads that endpoint's deliveries
// alone, also in the generic plan a prepared statement turns to: with
// ORDER BY id on the table, that plan walked the primary key back from the
// newest delivery of every endpoint, reading all of the others' newer
// deliveries (a busy endpoint's millions) to find a small one's cut. (How
// many of its own it reads: TestBacklogCostIsBoundedByTheLimit.)
func TestBacklogCutPlanReadsTheEndpointsPendingDeliveries(t *testing.T) {
	s := storeWith(t, Options{MaxConns: 2},
		`INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('m', 'call.created', '\x7b7d', 1)`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'ok', 'delivered', 0, g FROM generate_series(1, 50000) g`,
		`INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT (SELECT id FROM webhook_messages), 'dead', 'pending', g, g FROM generate_series(1, 20000) g`,
		`ANALYZE webhook_deliveries`)
	plan := genericPlans(t, s, []string{`PREPARE cut(text, int) AS ` + webhookSQL.BacklogCut}, `EXPLAIN EXECUTE cut('dead', 100)`)[0]
	if !strings.Contains(plan, "webhook_deliveries_by_endpoint") || strings.Contains(plan, "webhook_deliveries_pkey") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("generic plan of the backlog cut:\n%s\nwant a read of webhook_deliveries_by_endpoint", plan)
	}
}
