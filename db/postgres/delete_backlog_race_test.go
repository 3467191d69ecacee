package postgres

import (
	"context"
	"testing"

	"callsig/db"
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
	backlog := 2*db.FailBatch + 5
	queueBacklog(t, s, "https://e.example/", backlog)
	second := secondBatchDelivery(t, s) // a delivery of the deletion's second batch
	// The other node's sweep holds that delivery.
	other := holdDelivery(t, s, second)
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
	awaitDone(t, done, "the deletion")
	pending := pendingBacklog(t, s)
	if pending != 0 {
		t.Errorf("after the deletion returned: %d of its deliveries pending, want 0", pending)
	}
}
