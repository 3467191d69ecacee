package postgres

import (
	"context"
	"testing"

	"callsig/db"
	"callsig/webhooks"
)

// A put that gives an endpoint a new address while another node records
// the 410 that disables it (the outcome's write: the endpoint disabled,
// one batch of its backlog failed) fails the rest of that backlog before
// enabling it again. Its read of the endpoint's state did not wait for
// the 410's write: it saw the endpoint live, failed nothing, and its
// upsert, which did wait, enabled it again with what the 410 left
// pending (all but the first batch), sent to the new address.
func TestPutBesideA410FailsTheGoneBacklog(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	backlog := 2*db.FailBatch + 5
	queueBacklog(t, s, "https://old.example/", backlog)
	// The 410's outcome, not committed yet.
	gone, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Rollback()
	if _, err := gone.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'receiver answered 410' WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	if _, err := gone.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled'
		WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT $1)`, db.FailBatch); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://new.example/", Secret: "whsec_e", CreatedAt: 200})
	}()
	if finished, err := lockedOrDone(t, s, done); finished {
		t.Fatalf("the put did not wait for the 410's write (%v)", err)
	}
	if err := gone.Commit(); err != nil {
		t.Fatal(err)
	}
	awaitDone(t, done, "the put")
	var enabled bool
	if err := s.db.GetContext(ctx, &enabled, `SELECT enabled FROM webhook_endpoints WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	pending := pendingBacklog(t, s)
	if !enabled || pending != 0 {
		t.Errorf("after the put: enabled %v, %d of the backlog the 410 disabled pending for the new address; want enabled, 0", enabled, pending)
	}
}
