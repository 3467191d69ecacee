package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/internal/pgtest"
	"callsig/webhooks"
)

// A node records, in one write, the outcomes of two attempts to an
// endpoint a 410 disabled already, whose leases ran out (a slow receiver,
// a paused process): a 500 and then, in id order, a 410. Beside it
// another node puts the endpoint at a new address (CALLSIG_WEBHOOK_URL
// changed, at its start). The outcomes' write took the first delivery's
// row, then waited for the endpoint's (the 410's read of its URL); the
// put held the endpoint's row (its read of the state, f8bca39) and waited
// for that delivery, to fail it with the dead backlog: a deadlock, and
// PostgreSQL aborted one side. The put, run once, failed, and so did the
// node's start; the outcomes were written again one by one. Every writer
// now takes an endpoint's row before any of its deliveries'.
//
// A deletion beside them took the rows in the same order as the put, and
// deadlocked with them the same way (since before 76791ad).
func TestPutBesideOutcomesOfLapsedLeasesDoesNotDeadlock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		run     func(s *Store) error
		enabled bool
	}{
		{"put", func(s *Store) error {
			return s.PutWebhookEndpoint(context.Background(), &webhooks.Endpoint{ID: "wh_e", URL: "https://new.example/", Secret: "whsec_e", CreatedAt: 5000})
		}, true},
		{"delete", func(s *Store) error { return s.DeleteWebhookEndpoint(context.Background(), "wh_e", 5000) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) { putBesideOutcomes(t, tc.run, tc.enabled) })
	}
}

func putBesideOutcomes(t *testing.T, run func(s *Store) error, wantEnabled bool) {
	ctx := context.Background()
	s := openStoreSlowDeadlocks(t)
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://old.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
		t.Fatal(err)
	}
	// Two attempts in flight, leased until 1,000, and a backlog behind them.
	var ids []int64
	if err := s.db.SelectContext(ctx, &ids, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at, locked_until)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', 100, 100, CASE WHEN i <= 2 THEN 1000 ELSE 0 END
		FROM generate_series(1, 10) i RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'receiver answered 410' WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	first, second := min(ids[0], ids[1]), max(ids[0], ids[1])

	// Something else holds the first delivery's row a moment (a claim
	// renewing it, an admin's retry): the outcomes wait for it first,
	// then the put.
	hold := holdDelivery(t, s, first)
	finished := make(chan error, 1)
	go func() {
		_, err := s.FinishWebhookAttempts(ctx, []webhooks.Outcome{
			{DeliveryID: first, Lease: 1000, EndpointID: "wh_e", URL: "https://old.example/", At: 5000,
				StatusCode: 500, Error: "500", NextAttemptAt: 9000},
			{DeliveryID: second, Lease: 1000, EndpointID: "wh_e", URL: "https://old.example/", At: 5000,
				StatusCode: 410, Error: "410", DisableReason: "receiver answered 410"},
		})
		finished <- err
	}()
	waitLocked(t, s, 1)
	put := make(chan error, 1)
	go func() {
		put <- run(s)
	}()
	waitLocked(t, s, 2)
	if err := hold.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"outcomes": finished, "put or deletion": put} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("the %s: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the %s did not return: a deadlock (deadlock_timeout 20 s here)", name)
		}
	}
	var enabled bool
	var pending int
	if err := s.db.GetContext(ctx, &enabled, `SELECT enabled FROM webhook_endpoints WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	if err := s.db.GetContext(ctx, &pending, `SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 'wh_e' AND status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	if enabled != wantEnabled || pending != 0 {
		t.Errorf("after both: enabled %v, %d of the dead backlog pending; want enabled %v, 0", enabled, pending, wantEnabled)
	}
}

// openStoreSlowDeadlocks is openStore with deadlock_timeout at 20 s in
// its sessions: a deadlock, which the store's writes now run again, shows
// as a wait past a test's bound rather than as a 1 s stall.
func openStoreSlowDeadlocks(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.NewDatabase(t)+"&deadlock_timeout=20s", Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var timeout string
	if err := s.db.Get(&timeout, `SHOW deadlock_timeout`); err != nil || timeout != "20s" {
		t.Fatalf("deadlock_timeout %q (%v), want 20s", timeout, err)
	}
	return s
}
