package postgres

import (
	"context"
	"testing"
	"time"

	"callsig/db"
	"callsig/webhooks"
)

// A batch of a dead endpoint's backlog comes back empty, on PostgreSQL,
// when another node's sweep of dead endpoints (a claim's
// FailDeadEndpoints) held every row of it and failed them: the batch
// waited for them and skipped them. That is no sign that none are left.
// The put then enabled the endpoint again with the rest of the backlog
// pending (sent to the new address), and the deletion answered with it
// pending.
func TestEmptyBatchBesideASweepIsNotTheEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(s *Store) error
	}{
		{"put", func(s *Store) error {
			return s.PutWebhookEndpoint(context.Background(), &webhooks.Endpoint{ID: "wh_e", URL: "https://new.example/", Secret: "whsec_e", CreatedAt: 200})
		}},
		{"delete", func(s *Store) error { return s.DeleteWebhookEndpoint(context.Background(), "wh_e", 200) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := openStore(t)
			if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: "https://old.example/", Secret: "whsec_e", CreatedAt: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
				t.Fatal(err)
			}
			first := db.FailBatch // the batch the deletion or the put takes first
			if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at)
				SELECT (SELECT id FROM webhook_messages), 'wh_e', 100, 100 FROM generate_series(1, $1)`, first+5); err != nil {
				t.Fatal(err)
			}
			if tc.name == "put" { // a 410 disabled it, the rest left to the sweeps
				if _, err := s.db.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = '410' WHERE id = 'wh_e'`); err != nil {
					t.Fatal(err)
				}
			}
			// The other node's sweep holds the first batch.
			other, err := s.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Rollback()
			if _, err := other.ExecContext(ctx, `SELECT id FROM webhook_deliveries ORDER BY id LIMIT $1 FOR UPDATE`, db.FailBatch); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- tc.run(s) }()
			if finished, err := lockedOrDone(t, s, done); finished {
				t.Fatalf("did not wait for the rows the sweep holds (%v)", err)
			}
			if _, err := other.ExecContext(ctx, `UPDATE webhook_deliveries SET status = 'failed', last_error = 'endpoint disabled', locked_until = 0
				WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT $1)`, db.FailBatch); err != nil {
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
				t.Fatal("did not return")
			}
			pending := pendingBacklog(t, s)
			if pending != 0 {
				t.Errorf("%d of the dead backlog pending after the %s returned, want 0", pending, tc.name)
			}
		})
	}
}
