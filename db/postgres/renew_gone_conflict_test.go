package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/webhooks"
)

// A claim renews the leases of this node's attempts in flight whose
// leases ran out (a clock jump, a paused process), in id order, while the
// outcome of one of them, a 410, is being written: the outcome holds its
// delivery and fails the endpoint's other pending deliveries not leased
// at its time, the other lapsed attempt among them, which the claim
// holds. Each waits for the other; PostgreSQL aborts one. The webhook
// store's writes are now run again when so aborted: the outcome was
// dropped (logged; the delivery sent again once its lease ran out).
func TestClaimBesideA410OutcomeIsRunAgainWhenAborted(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://old.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	if err := s.db.SelectContext(ctx, &ids, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at, locked_until)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', 100, 100, 1000 FROM generate_series(1, 2) i ORDER BY i RETURNING id`); err != nil {
		t.Fatal(err)
	}
	first, second := min(ids[0], ids[1]), max(ids[0], ids[1])
	// Something holds the first a moment: the claim queues behind it,
	// then the outcome's failing of the backlog.
	hold := holdDelivery(t, s, first)
	claimed := make(chan error, 1)
	go func() {
		_, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 5000, LeaseUntil: 50_000, Limit: 10, Share: 10,
			InFlight: map[int64]int64{first: 1000, second: 1000}})
		claimed <- err
	}()
	waitLocked(t, s, 1)
	finished := make(chan error, 1)
	go func() {
		_, err := s.FinishWebhookAttempts(ctx, []webhooks.Outcome{{DeliveryID: second, Lease: 1000, EndpointID: "wh_e",
			URL: "https://old.example/", At: 5000, StatusCode: 410, Error: "410", DisableReason: "receiver answered 410"}})
		finished <- err
	}()
	waitLocked(t, s, 2)
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"claim": claimed, "outcome": finished} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("the %s: %v", name, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("the %s did not return", name)
		}
	}
}
