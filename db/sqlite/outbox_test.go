package sqlite

import (
	"context"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/webhooks"
)

// Pruning deletes finished deliveries created before the cut-off, a
// bounded batch per call, never a pending one (db/storetest checks that
// much on every backend), and here, in SQLite's own tables, a message only
// once no delivery refers to it.
func TestPruneWebhookDeliveriesDropsOrphanMessages(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('a', 'https://a', 's', 1), ('b', 'https://b', 's', 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES
				(1, 'msg_1', 'call.created', '{}', 100), (2, 'msg_2', 'call.created', '{}', 100), (3, 'msg_3', 'call.created', '{}', 900);
			INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at) VALUES
				(1, 'a', 'delivered', 0, 100), (1, 'b', 'pending', 100, 100),
				(2, 'a', 'delivered', 0, 100), (2, 'b', 'failed', 0, 100),
				(3, 'a', 'delivered', 0, 900)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{2, 1, 0} {
		n, err := s.PruneWebhookDeliveries(ctx, 500, 2)
		if err != nil || n != want {
			t.Fatalf("prune %d: deleted %d (%v), want %d", i, n, err, want)
		}
	}
	var left []string
	if err := s.rdb.Select(&left, `SELECT message_id || '/' || endpoint_id || '/' || status FROM webhook_deliveries ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(left, " ") != "1/b/pending 3/a/delivered" {
		t.Errorf("deliveries left: %v", left)
	}
	var msgs []string
	if err := s.rdb.Select(&msgs, `SELECT msg_id FROM webhook_messages ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(msgs, " ") != "msg_1 msg_3" {
		t.Errorf("messages left: %v, want msg_2 gone with its last delivery", msgs)
	}
}

// The dispatcher's statements run prepared: a claim (renewing a lease run
// out, too), an outcome, a release and a look at the schedule parse no SQL
// (the driver parses text anew on every run), and work as before.
func TestDispatcherStatementsRunPrepared(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('a', 'https://a', 's', 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES
				(1, 'msg_1', 'call.created', '{}', 100), (2, 'msg_2', 'call.created', '{}', 100), (3, 'msg_3', 'call.created', '{}', 100);
			INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at) VALUES
				(1, 'a', 'pending', 100, 100), (2, 'a', 'pending', 100, 100), (3, 'a', 'pending', 100, 100)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before, hits := s.unprepared.Load(), s.prepared.Load()
	claim := webhooks.Claim{Now: 1_000, LeaseUntil: 2_000, Limit: 2, Share: 2}
	got, err := s.ClaimWebhookDeliveries(ctx, claim)
	if err != nil || len(got.Attempts) != 2 || got.Attempts[0].MsgID != "msg_1" {
		t.Fatalf("claim: %+v, %v", got, err)
	}
	a, b := got.Attempts[0], got.Attempts[1]
	// b's lease runs out while it is in flight: the next claim renews it.
	claim = webhooks.Claim{Now: 3_000, LeaseUntil: 4_000, Limit: 0, Share: 2, InFlight: map[int64]int64{b.DeliveryID: b.Lease}}
	if got, err = s.ClaimWebhookDeliveries(ctx, claim); err != nil || len(got.Renewed) != 1 {
		t.Fatalf("renewing claim: %+v, %v", got, err)
	}
	if err := s.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: a.DeliveryID, Lease: a.Lease, EndpointID: "a", At: 1_500, StatusCode: 204, Delivered: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseWebhookDelivery(ctx, b.DeliveryID, 4_000); err != nil {
		t.Fatal(err)
	}
	due, err := s.NextWebhookDue(ctx, 5_000)
	if err != nil || due.Endpoints["a"] != 100 {
		t.Fatalf("next due: %+v, %v", due, err)
	}
	if n := s.unprepared.Load() - before; n != 0 {
		t.Fatalf("%d of the dispatcher's statements ran as SQL text, not prepared", n)
	}
	// Two claims (the dead-endpoint sweep, the live endpoints, the
	// endpoint's due deliveries; each claimed one's message and lease;
	// one renewal), an outcome, a release and the schedule's two reads.
	if n := s.prepared.Load() - hits; n < 13 {
		t.Fatalf("%d statements ran prepared, want 13 at least: the dispatcher's statements do not go through them", n)
	}
	if n := count(t, s, "webhook_deliveries WHERE status = 'delivered'"); n != 1 {
		t.Fatalf("%d deliveries delivered, want 1", n)
	}
}
