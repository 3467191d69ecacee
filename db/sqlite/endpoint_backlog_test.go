package sqlite

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/webhooks"
)

// An endpoint that goes with a long backlog pending (a receiver down for
// long is owed up to 100,000 by default) has it failed a batch
// (db.FailBatch) per write: a deletion all of it before it returns, in as
// many writes; a 410's outcome one batch, and each claim's sweep of dead
// endpoints one more. In one statement, failing 127,000 held the single
// writer, and every request behind it, 1.5 s.
func TestEndpointBacklogFailedABatchPerWrite(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	backlog := 2*db.FailBatch + 5
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('gone', 'https://gone', 's', 1), ('down', 'https://down', 's', 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES (1, 'msg_1', 'call.created', '{}', 100)`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT 1, e.id, 'pending', 100, 100 FROM n, (SELECT 'gone' AS id UNION ALL SELECT 'down') e`, backlog)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pending := func(endpoint string) int {
		return count(t, s, "webhook_deliveries WHERE endpoint_id = ? AND status = 'pending'", endpoint)
	}

	before := s.WriterStats().Writes
	if err := s.DeleteWebhookEndpoint(ctx, "gone", 200); err != nil {
		t.Fatal(err)
	}
	if n, writes := pending("gone"), s.WriterStats().Writes-before; n != 0 || writes != 4 {
		t.Errorf("after the deletion: %d of gone's deliveries pending, in %d writes; want none, in 4 (three batches, the last short, then an empty one)", n, writes)
	}

	// down answers 410 to one attempt.
	var attempt int64
	if err := s.rdb.Get(&attempt, `SELECT min(id) FROM webhook_deliveries WHERE endpoint_id = 'down'`); err != nil {
		t.Fatal(err)
	}
	if err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`UPDATE webhook_deliveries SET locked_until = 1000 WHERE id = ?`, attempt)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err = s.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: attempt, Lease: 1000, EndpointID: "down", At: 300,
		StatusCode: 410, Error: "gone", DisableReason: "410 Gone"})
	if err != nil {
		t.Fatal(err)
	}
	left := backlog - 1 - db.FailBatch
	if n := pending("down"); n != left {
		t.Errorf("after the 410: %d of down's deliveries pending, want %d (one batch failed)", n, left)
	}
	for left > 0 {
		if _, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 400, LeaseUntil: 2000, Limit: 10, Share: 10}); err != nil {
			t.Fatal(err)
		}
		left = max(left-db.FailBatch, 0)
		if n := pending("down"); n != left {
			t.Fatalf("after a claim: %d of down's deliveries pending, want %d (one more batch failed)", n, left)
		}
	}
}

// A 410 fails the whole backlog before the endpoint can come back: the
// configuration's new address for it (PutWebhookEndpoint enables it
// again) must not be sent what was queued for the address that answered
// 410. With a batch per 410 and the rest left to the claims' sweep,
// which no claim makes while no endpoint is live, the deliveries beyond
// the first batch stayed pending and were sent to the new address once
// it was put.
func TestGoneBacklogNotSentWhenTheEndpointComesBack(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	backlog := 2*db.FailBatch + 5
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('down', 'https://down', 's', 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES (1, 'msg_1', 'call.created', '{}', 100)`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT 1, 'down', 'pending', 100, 100 FROM n`, backlog)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var attempt int64
	if err := s.rdb.Get(&attempt, `SELECT min(id) FROM webhook_deliveries WHERE endpoint_id = 'down'`); err != nil {
		t.Fatal(err)
	}
	if err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`UPDATE webhook_deliveries SET locked_until = 1000 WHERE id = ?`, attempt)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err = s.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: attempt, Lease: 1000, EndpointID: "down", At: 300,
		StatusCode: 410, Error: "gone", DisableReason: "410 Gone"})
	if err != nil {
		t.Fatal(err)
	}
	// The configuration gives the endpoint a new address: enabled again.
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "down", URL: "https://new", Secret: "s", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 400, LeaseUntil: 2000, Limit: 10, Share: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed.Attempts) != 0 {
		t.Errorf("the endpoint back: %d deliveries queued before its 410 claimed to be sent, want none", len(claimed.Attempts))
	}
	if n := count(t, s, "webhook_deliveries WHERE endpoint_id = 'down' AND status = 'failed' AND last_error = 'endpoint disabled: 410 Gone'"); n != backlog-1 {
		t.Errorf("%d deliveries failed as the endpoint's, want %d", n, backlog-1)
	}
}
