package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/webhooks"
)

// A claim renews the leases of its attempts in flight whose leases ran
// out in id order (the rows of its InFlight), and a put or a deletion of
// their endpoint, dead, fails its backlog, those not leased at its now
// included: a batch took its rows in the order of its plan (the pending
// index: due order), not in id order. Two attempts whose due order is
// not their id order (the one with the lower id a retry, due later)
// closed a cycle, and PostgreSQL aborted one side: the put (run once:
// the node's start failed), the deletion (503; a later batch's abort
// ended its loop with the rest pending after the 204) or the claim. The
// batch now takes its rows in id order, as the claim, the outcomes and
// FailDeadEndpoints's sweep (SKIP LOCKED) do.
func TestFailingADeadBacklogBesideARenewalDoesNotDeadlock(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(s *Store) error
	}{
		{"put", func(s *Store) error {
			return s.PutWebhookEndpoint(context.Background(), &webhooks.Endpoint{ID: "wh_e", URL: "https://new.example/", Secret: "whsec_e", CreatedAt: 5000})
		}},
		{"delete", func(s *Store) error { return s.DeleteWebhookEndpoint(context.Background(), "wh_e", 5000) }},
	} {
		t.Run(tc.name, func(t *testing.T) { failBesideRenewal(t, tc.run) })
	}
}

func failBesideRenewal(t *testing.T, run func(s *Store) error) {
	ctx := context.Background()
	s := openStoreSlowDeadlocks(t)
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://old.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
		t.Fatal(err)
	}
	// Another endpoint's delivery log, and the statistics of a table in
	// use, so the batch is planned as in production: a hash join, the
	// pending deliveries read in the order they lie in the table.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', CASE WHEN i % 3 = 0 THEN 'pending' ELSE 'delivered' END, 100, 100
		FROM generate_series(1, 30000) i;
		ANALYZE webhook_deliveries;
		DELETE FROM webhook_deliveries`); err != nil {
		t.Fatal(err)
	}
	// Two attempts in flight here, leased until 1,000: the first a retry
	// due at 900, the second a first attempt due at 100.
	var ids []int64
	if err := s.db.SelectContext(ctx, &ids, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at, locked_until)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', CASE WHEN i = 1 THEN 900 ELSE 100 END, 100, 0
		FROM generate_series(1, 2) i ORDER BY i RETURNING id`); err != nil {
		t.Fatal(err)
	}
	// Leased in due order, as a claim leases them: the second first. Each
	// lease writes a new version of the row, so the first's now lies
	// after the second's in the table.
	for _, i := range []int{1, 0} {
		if _, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = 1000 WHERE id = $1`, ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'receiver answered 410' WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	first, second := min(ids[0], ids[1]), max(ids[0], ids[1])

	// Something holds the first a moment (an admin's retry): the claim,
	// then the put or the deletion, queue behind it.
	hold := holdDelivery(t, s, first)
	claimed := make(chan error, 1)
	go func() {
		_, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 5000, LeaseUntil: 50_000, Limit: 10, Share: 10,
			InFlight: map[int64]int64{first: 1000, second: 1000}})
		claimed <- err
	}()
	waitLocked(t, s, 1)
	other := make(chan error, 1)
	go func() { other <- run(s) }()
	waitLocked(t, s, 2)
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"claim": claimed, "put or deletion": other} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("the %s: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s did not return: a deadlock (deadlock_timeout 20 s here)", name)
		}
	}
	// Each of the two either renewed by the claim or failed with the
	// backlog, never pending and unleased.
	var loose int
	if err := s.db.GetContext(ctx, &loose, `SELECT count(*) FROM webhook_deliveries
		WHERE status = 'pending' AND locked_until <> 50000`); err != nil {
		t.Fatal(err)
	}
	if loose != 0 {
		t.Errorf("%d deliveries pending and not the claim's, want 0", loose)
	}
}
