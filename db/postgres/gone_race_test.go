package postgres

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// lockedOrDone waits until a session of s's database waits for a row
// lock, or until done (nil: never) delivers the outcome of what might have
// waited: finished then says so, with that outcome.
func lockedOrDone(t *testing.T, s *Store, done <-chan error) (finished bool, err error) {
	t.Helper()
	wait.For(t, 10*time.Second, "a session waiting for a lock", func() bool {
		select {
		case err = <-done:
			finished = true
			return true
		default:
		}
		var n int
		qerr := s.db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return qerr == nil && n > 0
	})
	return finished, err
}

// openStore opens a store on a new database, closed when the test ends.
func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// claimedDelivery returns a store on a new database with endpoint wh_a
// (at https://old.example/hook) and the attempt that claimed its one
// delivery, leased until 100,000.
func claimedDelivery(t *testing.T) (*Store, webhooks.Attempt) {
	t.Helper()
	ctx := context.Background()
	s := openStore(t)
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
	lockedOrDone(t, s, nil) // the outcome waits for the move's lock
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

// An endpoint deleted by a node of an older version during a rolling
// upgrade has no deletion time; the first pruning pass gives it its own
// time, and the endpoint is purged an hour after that, not at once (which
// would reopen the window the hour closes: a delivery left without its
// endpoint row).
func TestDeletedByAnOlderNodeIsPurgedAfterTheMargin(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	for _, id := range []string{"wh_old", "wh_back"} {
		if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: id, URL: "https://x.example/", Secret: "whsec_x", CreatedAt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// wh_back was deleted long ago by a new node, and put back since.
	if err := s.DeleteWebhookEndpoint(ctx, "wh_back", 1000); err != nil {
		t.Fatal(err)
	}
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_back", URL: "https://x.example/", Secret: "whsec_x", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	// The older node's DeleteEndpoint, of both.
	for _, id := range []string{"wh_old", "wh_back"} {
		if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET deleted = true, enabled = false WHERE id = $1 AND NOT deleted`, id); err != nil {
			t.Fatal(err)
		}
	}
	const now, hour = int64(10 * 3600 * 1000), int64(3600 * 1000)
	if n, err := s.PurgeDeletedWebhookEndpoints(ctx, now, now-hour, 10); err != nil || n != 0 {
		t.Fatalf("first pass: purged %d (%v), want none", n, err)
	}
	if n, err := s.PurgeDeletedWebhookEndpoints(ctx, now+hour+1, now+1, 10); err != nil || n != 2 {
		t.Fatalf("an hour later: purged %d (%v), want both endpoints", n, err)
	}
}

// Two nodes' claims, each renewing a run-out lease of its own on a
// disabled endpoint's deliveries, then failing the dead endpoint's
// deliveries: each sweep skips the row the other holds rather than wait
// for it (they deadlocked, and one claim failed).
func TestClaimsOfTwoNodesDoNotDeadlockOnADeadEndpoint(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://e.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		ch := storetest.NewCall(id, "alice", 1000)
		ch.Hooks = []calls.HookEvent{{Type: calls.HookCallCreated, CallID: id, Data: json.RawMessage(`{}`), Time: 1000}}
		storetest.Save(t, s, ch)
	}
	a, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 2000, LeaseUntil: 10_000, Limit: 1, Share: 4})
	if err != nil || len(a.Attempts) != 1 {
		t.Fatalf("A's claim = %+v (%v)", a, err)
	}
	b, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 2000, LeaseUntil: 11_000, Limit: 1, Share: 4})
	if err != nil || len(b.Attempts) != 1 {
		t.Fatalf("B's claim = %+v (%v)", b, err)
	}
	d1, d2 := a.Attempts[0], b.Attempts[0]
	if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'x' WHERE id = 'wh_e'`); err != nil {
		t.Fatal(err)
	}
	const now = 200_000
	// B's claim, by hand: its renewal, then (after A's renewal) its sweep.
	tb, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Rollback()
	if _, err := tb.ExecContext(ctx, tb.Rebind(`UPDATE webhook_deliveries SET locked_until = ? WHERE id = ? AND locked_until = ? AND status = 'pending'`),
		now+120_000, d2.DeliveryID, d2.Lease); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: now, LeaseUntil: now + 120_000, Limit: 4, Share: 4,
			InFlight: map[int64]int64{d1.DeliveryID: d1.Lease}})
		done <- err
	}()
	// A's claim has renewed D1 and either finished or waits for D2's lock.
	finished, errA := lockedOrDone(t, s, done)
	_, errB := tb.ExecContext(ctx, webhookSQL.FailDeadEndpoints, now, db.FailBatch)
	if !finished {
		select {
		case errA = <-done:
		case <-time.After(5 * time.Second):
			_ = tb.Rollback()
			errA = <-done
		}
	}
	if errA != nil || errB != nil {
		t.Fatalf("A's claim: %v\nB's sweep: %v", errA, errB)
	}
	if err := tb.Commit(); err != nil {
		t.Fatal(err)
	}
}
