package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/db"
	"callsig/webhooks"
)

// A deletion fails all of its endpoint's pending deliveries before it
// returns, though another node's claim fails some of the same batch at
// the same time (its sweep of dead endpoints takes those of the deleted
// endpoint too). A batch that came back short because the other node's
// sweep held some of its rows, and failed them, is no sign that none are
// left: the deletion stopped there and returned with the rest pending.
func TestDeletionFailsTheBacklogBesideAnotherNodesSweep(t *testing.T) {
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
	// The other node's sweep holds that delivery.
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
		t.Fatalf("the deletion did not wait for the row the sweep holds (%v)", err)
	}
	if _, err := other.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint deleted', locked_until = 0
		WHERE id = $1`, second); err != nil {
		t.Fatal(err)
	}
	if err := other.Commit(); err != nil {
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
	if err := s.db.GetContext(ctx, &pending, `SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 'wh_e' AND status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("after the deletion returned: %d of its deliveries pending, want 0", pending)
	}
}
