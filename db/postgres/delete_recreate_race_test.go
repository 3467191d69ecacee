package postgres

import (
	"context"
	"testing"

	"callsig/db"
)

// A deletion failing its endpoint's backlog a batch per write stops once
// the endpoint is live again: another node's PutWebhookEndpoint (the
// configured endpoint, CALLSIG_WEBHOOK_URL, put at its start) may bring
// the id back between two batches, and what is queued for it from then
// on is the live endpoint's, not the deleted one's. The deletion's later
// batches failed those as "endpoint deleted".
func TestDeletionStopsWhenTheEndpointIsPutBack(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	backlog := 2*db.FailBatch + 5
	queueBacklog(t, s, "https://e.example/", backlog)
	second := secondBatchDelivery(t, s) // a delivery of the deletion's second batch
	// Hold the deletion in its second batch.
	other := holdDelivery(t, s, second)
	done := make(chan error, 1)
	go func() { done <- s.DeleteWebhookEndpoint(ctx, "wh_e", 200) }()
	if finished, err := lockedOrDone(t, s, done); finished {
		t.Fatalf("the deletion did not wait for the row held (%v)", err)
	}
	// Meanwhile the id is put back (as another node's start does, the
	// old backlog's rest failed first), and a call queues deliveries
	// for the live endpoint.
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted'
		WHERE endpoint_id = 'wh_e' AND status = 'pending' AND id > $1`, second+db.FailBatch); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET deleted = false, enabled = true, deleted_at = 0, url = 'https://new.example/' WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	const live = 7
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', 300, 300 FROM generate_series(1, $1)`, live); err != nil {
		t.Fatal(err)
	}
	if err := other.Rollback(); err != nil {
		t.Fatal(err)
	}
	awaitDone(t, done, "the deletion")
	var pending int
	if err := s.db.GetContext(ctx, &pending, `SELECT count(*) FROM webhook_deliveries
		WHERE endpoint_id = 'wh_e' AND status = 'pending' AND created_at = 300`); err != nil {
		t.Fatal(err)
	}
	if pending != live {
		t.Errorf("the endpoint put back has %d of its %d new deliveries pending, want all (the deletion failed the rest)", pending, live)
	}
}
