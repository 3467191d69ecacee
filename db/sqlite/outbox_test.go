package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
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

// A claim gives each live endpoint at most its free share, skips what is
// in flight here (renewing its lease), orders the claim by due time within
// the limit, and fails the pending deliveries of dead endpoints.
func TestClaimWebhookDeliveriesPerEndpoint(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO webhook_endpoints (id, url, secret, created_at, enabled, deleted) VALUES
				('slow', 'https://s', 's', 1, 1, 0), ('fast', 'https://f', 's', 1, 1, 0),
				('off', 'https://o', 's', 1, 0, 0), ('gone', 'https://g', 's', 1, 1, 1);
			INSERT INTO webhook_messages (id, msg_id, type, payload, created_at) VALUES (1, 'msg_1', 'call.created', '{}', 1);
			INSERT INTO webhook_deliveries (id, message_id, endpoint_id, next_attempt_at, created_at) VALUES
				(1, 1, 'slow', 10, 1), (2, 1, 'slow', 11, 1), (3, 1, 'slow', 12, 1), (4, 1, 'slow', 13, 1),
				(5, 1, 'fast', 14, 1), (6, 1, 'fast', 15, 1), (7, 1, 'fast', 500, 1),
				(8, 1, 'off', 10, 1), (9, 1, 'gone', 10, 1)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(list []webhooks.Attempt) (out []int64) {
		for _, a := range list {
			out = append(out, a.DeliveryID)
		}
		return out
	}

	// slow already has 1 in flight here (delivery 1, lease run out): it
	// may get 1 more; fast its whole share of 2, but the limit is 2, which
	// goes to the earliest due.
	c := webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 2, Share: 2,
		Free: map[string]int{"slow": 1}, InFlight: map[int64]bool{1: true}}
	got, more, err := s.ClaimWebhookDeliveries(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if g := fmt.Sprint(ids(got)); g != "[2 5]" || !more {
		t.Fatalf("claimed %s (more %v), want [2 5] and more", g, more)
	}
	if got[0].MsgID != "msg_1" || string(got[0].Payload) != "{}" || got[0].URL != "https://s" {
		t.Errorf("attempt %+v", got[0])
	}
	var leased []string
	if err := s.rdb.Select(&leased, `SELECT id || ':' || locked_until FROM webhook_deliveries WHERE locked_until > 0 ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(leased, " "); g != "1:1000 2:1000 5:1000" {
		t.Errorf("leases %s: the claimed ones and the renewed one in flight", g)
	}
	var dead []string
	if err := s.rdb.Select(&dead, `SELECT id || ':' || status || ':' || last_error FROM webhook_deliveries WHERE id IN (8, 9) ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if g := strings.Join(dead, " "); g != "8:failed:endpoint disabled 9:failed:endpoint deleted" {
		t.Errorf("dead endpoints' deliveries: %s", g)
	}

	// The schedule: the next unleased of slow is 3 (due 12), of fast 6 (15);
	// the earliest lease ends at 1000.
	due, err := s.NextWebhookDue(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if g := fmt.Sprint(due.Endpoints, due.LeaseEnd); g != "map[fast:15 slow:12] 1000" {
		t.Errorf("due %s", g)
	}
	// An endpoint with no free share (its breaker open) gets nothing.
	c = webhooks.Claim{Now: 100, LeaseUntil: 1000, Limit: 10, Share: 2, Free: map[string]int{"slow": 0}}
	if got, _, err := s.ClaimWebhookDeliveries(ctx, c); err != nil || fmt.Sprint(ids(got)) != "[6]" {
		t.Fatalf("claimed %v (%v), want only fast's [6]", ids(got), err)
	}
}
