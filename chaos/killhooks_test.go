package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to read a PostgreSQL outbox

	"callsig/webhooks"
)

// kHooks is the webhook receiver of the kill test, in the test process
// (it never dies): it checks each request's Standard Webhooks signature
// and records every message by its webhook-id. Its endpoint takes
// call.created and call.ended only: every event type would queue more
// messages than one endpoint's share of the dispatcher (4 attempts in
// flight) drains on these two cores, and these two are what the check
// ties to the calls.
type kHooks struct {
	srv *httptest.Server

	mu       sync.Mutex
	signer   *webhooks.Signer // set by register, before any call
	got      map[string]kHook // webhook-id → the first copy received
	requests int
	bad      []string // bad signatures, a message whose body changed between copies
}

type kHook struct {
	typ, callID string
	body        []byte
}

func newKHooks(t *testing.T) *kHooks {
	t.Helper()
	h := &kHooks{got: map[string]kHook{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

// killAdminToken is the admin token of the server under test.
const killAdminToken = "chaos-admin-token-0123456789abcdef-0123456789"

// env lets the server under test send webhooks to h: the admin token to
// register it, loopback allowed, and the 20-s lease, the shortest allowed,
// after which another node makes an attempt the kill cut off again.
func (h *kHooks) env() []string {
	return []string{"CALLSIG_ADMIN_TOKEN=" + killAdminToken, "CALLSIG_WEBHOOK_ALLOW_PRIVATE=true", "CALLSIG_WEBHOOK_LEASE=20s"}
}

// register subscribes h to call.created and call.ended on the server at
// base, and keeps the secret the answer shows.
func (h *kHooks) register(t *testing.T, base string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"url": h.srv.URL, "eventTypes": []string{"call.created", "call.ended"}})
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
	signer, err := webhooks.NewSigner(ep.Secret)
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.signer = signer
	h.mu.Unlock()
}

func (h *kHooks) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the sender died mid-request
	}
	id := r.Header.Get(webhooks.HeaderID)
	unix, _ := strconv.ParseInt(r.Header.Get(webhooks.HeaderTimestamp), 10, 64)
	h.mu.Lock()
	want := h.signer.Sign(id, time.Unix(unix, 0), body)
	h.mu.Unlock()
	signed := false
	for _, sig := range strings.Fields(r.Header.Get(webhooks.HeaderSignature)) {
		signed = signed || sig == want
	}
	var m struct {
		Type string `json:"type"`
		Data struct {
			CallID string `json:"callID"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &m)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if !signed {
		h.bad = append(h.bad, fmt.Sprintf("webhook %s (%s): bad signature %q", id, m.Type, r.Header.Get(webhooks.HeaderSignature)))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if prev, ok := h.got[id]; ok {
		if !bytes.Equal(prev.body, body) {
			h.bad = append(h.bad, fmt.Sprintf("webhook %s sent twice with different bodies:\n    %s\n    %s", id, prev.body, body))
		}
	} else {
		h.got[id] = kHook{typ: m.Type, callID: m.Data.CallID, body: body}
	}
	w.WriteHeader(http.StatusNoContent)
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

// checkHooks: every message of the outbox was delivered to the receiver,
// signed, under its webhook-id; the receiver got nothing the outbox does
// not hold (nothing sent for a change a crash lost); and each call, as
// GET shows it at the end, has exactly one call.created message and, once
// ended, exactly one call.ended (no change's messages lost or made twice).
func (f *kFinal) checkHooks(t *testing.T) {
	h := f.hooks
	h.mu.Lock()
	defer h.mu.Unlock()
	bad := append([]string(nil), h.bad...)
	for id, o := range f.outbox {
		got, ok := h.got[id]
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
	for id, got := range h.got {
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
	types := map[string]int{}
	for _, got := range h.got {
		types[got.typ]++
	}
	t.Logf("%d webhook messages in the outbox, %d received %v, in %d requests", len(f.outbox), len(h.got), types, h.requests)
	report(t, "webhooks", bad)
}
