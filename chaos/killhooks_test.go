package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to read a PostgreSQL outbox

	"callsig/internal/testkit"
)

// kHooks are the webhook endpoints of the kill test: testkit's receivers,
// in the test process (they never die), which check every request's
// signature and body and record it. One endpoint takes call.created and
// call.ended, the other call.user_state_changed and call.missed: each
// endpoint has its own share of the dispatcher's attempts, so the state
// changes (the most numerous messages) do not hold back the others, and
// the check ties every type the load makes to the calls. (call.push_requested
// needs a pushConfig, which no request of the load carries.)
type kHooks struct{ calls, states *testkit.Receiver }

func newKHooks(t *testing.T) *kHooks {
	return &kHooks{calls: testkit.NewReceiver(t), states: testkit.NewReceiver(t)}
}

// killAdminToken is the admin token of the server under test.
const killAdminToken = "chaos-admin-token-0123456789abcdef-0123456789"

// env lets the server under test send webhooks to h: the admin token to
// register it, loopback allowed, and the 20-s lease, the shortest allowed,
// after which another node makes an attempt the kill cut off again.
func (h *kHooks) env() []string {
	return []string{"CALLSIG_ADMIN_TOKEN=" + killAdminToken, "CALLSIG_WEBHOOK_ALLOW_PRIVATE=true", "CALLSIG_WEBHOOK_LEASE=20s"}
}

// register subscribes h's receivers to their types on the server at base.
func (h *kHooks) register(t *testing.T, base string) {
	t.Helper()
	registerHook(t, base, h.calls, "call.created", "call.ended")
	registerHook(t, base, h.states, "call.user_state_changed", "call.missed")
}

// registerHook subscribes rcv to types on the server at base, and gives
// the receiver the secret the answer shows.
func registerHook(t *testing.T, base string, rcv *testkit.Receiver, types ...string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"url": rcv.URL(), "eventTypes": types})
	req, err := http.NewRequest(http.MethodPost, base+"/webhooks", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+killAdminToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var ep struct {
		Secret string `json:"secret"`
	}
	if b, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusCreated || json.Unmarshal(b, &ep) != nil {
		t.Fatalf("POST /webhooks: %d %s", res.StatusCode, b)
	}
	rcv.SetSecret(ep.Secret)
}

// kHook is a message the receiver got, by its first valid copy.
type kHook struct {
	typ, callID string
	body        []byte
	data        json.RawMessage
}

// received returns the valid messages the receiver got by webhook-id, how
// many requests it got, and what was wrong: an invalid request (the
// receiver says why in the log), a message whose body changed between
// copies.
func (h *kHooks) received() (got map[string]kHook, requests int, bad []string) {
	got = map[string]kHook{}
	ds := append(h.calls.Deliveries(), h.states.Deliveries()...)
	for _, d := range ds {
		if !d.Valid {
			bad = append(bad, fmt.Sprintf("webhook %s (%s): an invalid request", d.ID, d.Type))
			continue
		}
		if prev, ok := got[d.ID]; ok {
			if !bytes.Equal(prev.body, d.Body) {
				bad = append(bad, fmt.Sprintf("webhook %s sent twice with different bodies:\n    %s\n    %s", d.ID, prev.body, d.Body))
			}
			continue
		}
		var data struct {
			CallID string `json:"callID"`
		}
		_ = json.Unmarshal(d.Data, &data)
		got[d.ID] = kHook{typ: d.Type, callID: data.CallID, body: d.Body, data: d.Data}
	}
	return got, len(ds), bad
}

// kOutbox is one message of the outbox and the status of its delivery.
type kOutbox struct{ typ, callID, status string }

// readOutbox reads every webhook message of the store db (a SQLite file,
// opened read-only, or a postgres:// URL) with its delivery's status.
func readOutbox(ctx context.Context, db string) (map[string]kOutbox, error) {
	driver, dsn := "sqlite", "file:"+db+"?mode=ro"
	if strings.HasPrefix(db, "postgres") {
		driver, dsn = "pgx", db
	}
	conn, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT m.msg_id, m.type, m.call_id, d.status
		FROM webhook_messages m JOIN webhook_deliveries d ON d.message_id = m.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]kOutbox{}
	for rows.Next() {
		var id string
		var o kOutbox
		if err := rows.Scan(&id, &o.typ, &o.callID, &o.status); err != nil {
			return nil, err
		}
		out[id] = o
	}
	return out, rows.Err()
}

// waitHooks waits, the servers up, until every message of the outbox has
// been delivered, then keeps the outbox for checkHooks. A delivery the
// kill cut off in flight is sent again by another node once its lease
// (20 s) has passed, or by the restart on SQLite.
func (f *kFinal) waitHooks(ctx context.Context, t *testing.T, db string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := readOutbox(ctx, db)
		if err != nil {
			t.Fatalf("read the outbox: %v", err)
		}
		pending := 0
		for _, o := range out {
			if o.status == "pending" {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) {
			f.outbox = out
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %d pending webhooks: %v", pending, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkHooks: every message of the outbox was delivered to the receivers,
// signed, under its webhook-id; the receivers got nothing the outbox does
// not hold (nothing sent for a change a crash lost); each call, as GET
// shows it at the end, has exactly one call.created message and, once
// ended, exactly one call.ended (no change's messages lost or made twice);
// and the state changes and missed calls the users' logs show each have
// exactly one message, and nothing else has one (checkStateHooks).
func (f *kFinal) checkHooks(t *testing.T) {
	received, requests, bad := f.hooks.received()
	for id, o := range f.outbox {
		got, ok := received[id]
		switch {
		case o.status != "delivered":
			bad = append(bad, fmt.Sprintf("webhook %s (%s of call %s) is %s, want delivered", id, o.typ, o.callID, o.status))
		case !ok:
			bad = append(bad, fmt.Sprintf("webhook %s (%s of call %s) is delivered but the receiver never got it", id, o.typ, o.callID))
		case got.typ != o.typ || got.callID != o.callID:
			bad = append(bad, fmt.Sprintf("webhook %s received as %s of call %s, the outbox has %s of call %s", id, got.typ, got.callID, o.typ, o.callID))
		}
	}
	perCall := map[string]map[string]int{}
	for id, got := range received {
		if _, ok := f.outbox[id]; !ok {
			bad = append(bad, fmt.Sprintf("webhook %s (%s of call %s) received, not in the outbox", id, got.typ, got.callID))
		}
		if perCall[got.callID] == nil {
			perCall[got.callID] = map[string]int{}
		}
		perCall[got.callID][got.typ]++
	}
	for id, call := range f.calls {
		n := perCall[id]
		ended := 0
		if call.State == "ended" {
			ended = 1
		}
		if n["call.created"] != 1 || n["call.ended"] != ended {
			bad = append(bad, fmt.Sprintf("call %s (%s): %d call.created and %d call.ended webhooks, want 1 and %d", id, call.State, n["call.created"], n["call.ended"], ended))
		}
	}
	fences := map[string]bool{}
	for _, id := range f.fences {
		fences[id] = true
	}
	for id, n := range perCall {
		if _, ok := f.calls[id]; !ok && !fences[id] && n["call.created"] > 0 {
			bad = append(bad, fmt.Sprintf("call.created webhook for call %s, which GET /calls does not list", id))
		}
	}
	stateBad, checked := f.checkStateHooks(received)
	bad = append(bad, stateBad...)
	types := map[string]int{}
	for _, got := range received {
		types[got.typ]++
	}
	t.Logf("%d webhook messages in the outbox, %d received %v, in %d requests; tied to the logs: %v", len(f.outbox), len(received), types, requests, checked)
	report(t, "webhooks", bad)
}
