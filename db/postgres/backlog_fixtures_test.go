package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// The fixtures of the dead-backlog stories: an endpoint owed a backlog,
// and rows of it held as another node's statement would hold them.

// queueBacklog puts endpoint wh_e at url and queues n pending deliveries
// of one message to it, due at 100.
func queueBacklog(t *testing.T, s *Store, url string, n int) {
	t.Helper()
	ctx := context.Background()
	if err := s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh_e", URL: url, Secret: "whsec_e", CreatedAt: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_messages (msg_id, type, payload, created_at) VALUES ('msg_1', 'call.created', '{}', 100)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at)
		SELECT (SELECT id FROM webhook_messages), 'wh_e', 100, 100 FROM generate_series(1, $1)`, n); err != nil {
		t.Fatal(err)
	}
}

// secondBatchDelivery returns a delivery of a deletion's second batch.
func secondBatchDelivery(t *testing.T, s *Store) int64 {
	t.Helper()
	var id int64
	if err := s.db.GetContext(context.Background(), &id, `SELECT min(id) + $1 + 10 FROM webhook_deliveries`, db.FailBatch); err != nil {
		t.Fatal(err)
	}
	return id
}

// holdDelivery locks delivery id in a transaction of its own, as another
// node's statement would, and returns it; it is rolled back when t ends
// unless the test ends it first.
func holdDelivery(t *testing.T, s *Store, id int64) *sqlx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(ctx, `SELECT id FROM webhook_deliveries WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// waitLocked waits until n sessions of the test's database wait for a
// lock.
func waitLocked(t *testing.T, s *Store, n int) {
	t.Helper()
	wait.For(t, 10*time.Second, "sessions waiting for a lock", func() bool {
		var got int
		err := s.db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&got)
		return err == nil && got >= n
	})
}

// awaitDone waits for the result of what, run in the background, and
// fails t if it failed or did not return.
func awaitDone(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// pendingBacklog counts wh_e's deliveries still pending.
func pendingBacklog(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.GetContext(context.Background(), &n, `SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 'wh_e' AND status = 'pending'`); err != nil {
		t.Fatal(err)
	}
	return n
}
