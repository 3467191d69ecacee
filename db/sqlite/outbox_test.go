package sqlite

import (
	"context"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
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
