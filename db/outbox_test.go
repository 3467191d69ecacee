package db

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

func TestHooksFanOutToSubscribedEnabledEndpoints(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`INSERT INTO webhook_endpoints (id, url, secret, event_types, created_at, enabled, deleted) VALUES
			('all', 'https://a', 's', '', 1, 1, 0),
			('created', 'https://b', 's', ',call.created,call.ended,', 1, 1, 0),
			('prefix', 'https://c', 's', ',call.created_x,', 1, 1, 0),
			('ended', 'https://d', 's', ',call.ended,', 1, 1, 0),
			('disabled', 'https://e', 's', '', 1, 0, 0),
			('deleted', 'https://f', 's', '', 1, 1, 1)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := newCall("c1", "alice", 1_700_000_000_123, "bob")
	ch.Hooks = []calls.HookEvent{{Type: calls.HookCallCreated, CallID: "c1", Data: json.RawMessage(`{"callID":"c1"}`), Time: 1_700_000_000_123}}
	save(t, s, ch)

	var got []string
	if err := s.rdb.Select(&got, `SELECT endpoint_id FROM webhook_deliveries
		WHERE status = 'pending' AND next_attempt_at = 1700000000123 ORDER BY endpoint_id`); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "all,created" {
		t.Errorf("deliveries to %v, want [all created]", got)
	}
	var msg struct {
		MsgID   string `db:"msg_id"`
		Type    string `db:"type"`
		CallID  string `db:"call_id"`
		Payload []byte `db:"payload"`
	}
	if err := s.rdb.Get(&msg, `SELECT msg_id, type, call_id, payload FROM webhook_messages`); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg.MsgID, "msg_") || msg.Type != "call.created" || msg.CallID != "c1" {
		t.Errorf("message = %+v", msg)
	}
	want := `{"type":"call.created","timestamp":"2023-11-14T22:13:20.123Z","data":{"callID":"c1"}}`
	if string(msg.Payload) != want {
		t.Errorf("payload = %s\nwant      %s", msg.Payload, want)
	}
}

// Pruning deletes finished deliveries created before the cut-off, a
// bounded batch per call, never a pending one, and a message only once no
// delivery refers to it.
func TestPruneWebhookDeliveries(t *testing.T) {
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
