package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/db"
	"callsig/webhooks"
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
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://e.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	backlog := 2*db.FailBatch + 5
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', 100, 100 FROM generate_series(1, $1)`, backlog); err != nil {
		t.Fatal(err)
	}
	var second int64 // a delivery of the deletion's second batch
	if err := s.db.GetContext(ctx, &second, `SELECT min(id) + $1 + 10 FROM webhook_deliveries`, db.FailBatch); err != nil {
		t.Fatal(err)
	}
	// Hold the deletion in its second batch.
	other, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	if _, err := other.ExecContext(ctx, `SELECT id FROM webhook_deliveries WHERE id = $1 FOR UPDATE`, second); err != nil {
		t.Fatal(err)
	}
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
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deletion did not return")
	}
	var pending int
	if err := s.db.GetContext(ctx, &pending, `SELECT count(*) FROM webhook_deliveries
		WHERE endpoint_id = 'wh_e' AND status = 'pending' AND created_at = 300`); err != nil {
		t.Fatal(err)
	}
	if pending != live {
		t.Errorf("the endpoint put back has %d of its %d new deliveries pending, want all (the deletion failed the rest)", pending, live)
	}
}
