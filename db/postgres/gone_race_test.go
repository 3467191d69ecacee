package postgres

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
	"callsig/webhooks"
)

// claimedDelivery returns a store on a new database with endpoint wh_a
// (at https://old.example/hook) and the attempt that claimed its one
// delivery, leased until 100,000.
func claimedDelivery(t *testing.T) (*Store, webhooks.Attempt) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := &webhooks.Endpoint{ID: "wh_a", URL: "https://old.example/hook", Secret: "whsec_a", CreatedAt: 1}
	if err := s.PutWebhookEndpoint(ctx, e); err != nil {
		t.Fatal(err)
	}
	ch := storetest.NewCall("c1", "alice", 1000)
	ch.Hooks = []calls.HookEvent{{Type: calls.HookCallCreated, CallID: "c1", Data: json.RawMessage(`{}`), Time: 1000}}
	storetest.Save(t, s, ch)
	got, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 2000, LeaseUntil: 100_000, Limit: 1, Share: 1})
	if err != nil || len(got.Attempts) != 1 {
		t.Fatalf("claim = %+v (%v), want the delivery", got, err)
	}
	return s, got.Attempts[0]
}

// A 410 from an endpoint's old address is recorded while a PutEndpoint
// moving the endpoint (a node restarting with a new CALLSIG_WEBHOOK_URL)
// has not committed yet: the outcome reads the URL after the move, not
// before, and leaves the endpoint enabled at its new address. It read the
// old URL without a lock, and its disable, rechecking only "enabled"
// after waiting for the move's row lock, disabled the moved endpoint.
func TestGoneFromTheOldURLDuringAMove(t *testing.T) {
	ctx := context.Background()
	s, a := claimedDelivery(t)

	move, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer move.Rollback()
	if _, err := move.ExecContext(ctx, webhookSQL.PutEndpoint, "wh_a", "https://new.example/hook", "whsec_a", "", "", int64(1)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.FinishWebhookAttempt(ctx, webhooks.Outcome{DeliveryID: a.DeliveryID, Lease: a.Lease, EndpointID: "wh_a", At: 3000,
			StatusCode: 410, Error: "endpoint answered 410 Gone", DisableReason: "endpoint answered 410 Gone", URL: a.URL})
	}()
	time.Sleep(300 * time.Millisecond) // the outcome waits for the move's lock
	if err := move.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	e, err := s.WebhookEndpoint(ctx, "wh_a")
	if err != nil || !e.Enabled || e.URL != "https://new.example/hook" {
		t.Fatalf("endpoint %+v (%v), want enabled at its new address", e, err)
	}
	if due, err := s.NextWebhookDue(ctx, 3000); err != nil || due.Endpoints["wh_a"] != 3000 {
		t.Fatalf("NextWebhookDue = %+v (%v), want the delivery due again at once", due, err)
	}
}
