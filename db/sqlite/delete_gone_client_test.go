package sqlite

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// A deletion whose client gives up (the request's context ends: a client
// that hangs up, the REST deadline) after the write of the deletion
// still fails the rest of the backlog. It stopped there and returned,
// and the rest stayed pending, in the deliveries' listing and the
// queue's statistics, until a claim's sweep of dead endpoints: the
// dispatcher claims only for a live endpoint's due delivery or an
// attempt's end, so with no other endpoint, until they expired (48 h).
func TestDeletionFailsTheBacklogWhenItsClientGoes(t *testing.T) {
	s := openTest(t)
	backlog := 2*db.FailBatch + 5
	err := s.write(context.Background(), func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('gone', 'https://gone', 's', 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES (1, 'msg_1', 'call.created', '{}', 100)`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
			SELECT 1, 'gone', 'pending', 100, 100 FROM n`, backlog)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client goes as soon as the deletion's first write is done.
	write := func(ctx context.Context, fn func(*sqlx.Tx) error) error {
		defer cancel()
		return s.write(ctx, fn)
	}
	w := db.NewWebhooks(webhookSQL, write, s.read)
	if err := w.DeleteWebhookEndpoint(ctx, "gone", 200); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, "webhook_deliveries WHERE endpoint_id = 'gone' AND status = 'pending'"); n != 0 {
		t.Errorf("after the deletion returned: %d of %d deliveries pending, want 0", n, backlog)
	}
}
