package handlers

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"callsig/calls"
)

// TestCallLifecycleOverStore runs the call endpoints end to end over the
// real service and SQLite store: status codes, bodies and idempotent replay.
func TestCallLifecycleOverStore(t *testing.T) {
	store := openStore(t)
	h := newTestHandler(t, func(d *Deps) {
		d.Service = calls.NewService(calls.Options{Store: store})
		d.Idempotency = store
	})
	alice := authed(t, "alice")
	alice["Idempotency-Key"] = "create-1"

	w := do(h, req{method: "POST", path: "/calls", body: `{"invitees":["bob"],"extendedData":"hi"}`, header: alice})
	if w.Code != 201 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var created calls.InviteResult
	mustDecode(t, w.Body.Bytes(), &created)
	if created.CallID == "" || created.Call.CallID != created.CallID || created.Timeout != calls.DefaultTimeout ||
		created.ErrorUserList == nil || len(created.Call.CallUserList) != 2 ||
		created.Call.CallUserList[0].State != calls.StateAccepted || created.Call.CallUserList[1].State != calls.StateInviting {
		t.Fatalf("create body: %s", w.Body)
	}
	replay := do(h, req{method: "POST", path: "/calls", body: `{"invitees":["bob"],"extendedData":"hi"}`, header: alice})
	if replay.Code != 201 || replay.Body.String() != w.Body.String() || replay.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s %v", replay.Code, replay.Body, replay.Header())
	}
	decodeProblem(t, do(h, req{method: "POST", path: "/calls", body: `{"invitees":["carol"]}`, header: alice}), 422, "idempotency_conflict")

	path := "/calls/" + created.CallID
	w = do(h, req{method: "GET", path: path, header: authed(t, "bob")})
	var info calls.CallInfo
	mustDecode(t, w.Body.Bytes(), &info)
	if w.Code != 200 || info.CallID != created.CallID || info.Caller != "alice" || info.State != calls.CallStarted {
		t.Fatalf("get: %d %s", w.Code, w.Body)
	}
	decodeProblem(t, do(h, req{method: "GET", path: path, header: authed(t, "carol")}), 404, "call_not_found")

	// accept with no body and no Content-Type, from a named device.
	bob := authed(t, "bob")
	bob["X-Device-ID"] = "phone-1"
	w = do(h, req{method: "POST", path: path + "/accept", header: bob})
	if w.Code != 200 || w.Body.String() != `{"callID":"`+created.CallID+`"}`+"\n" {
		t.Fatalf("accept: %d %s", w.Code, w.Body)
	}
	// The general call ended once nobody was pending.
	decodeProblem(t, do(h, req{method: "POST", path: path + "/reject", body: `{"extendedData":"x"}`, header: bob}), 409, "call_ended")

	w = do(h, req{method: "GET", path: "/calls?count=500", header: authed(t, "alice")})
	var list calls.ListResult
	mustDecode(t, w.Body.Bytes(), &list)
	if w.Code != 200 || len(list.CallList) != 1 || list.CallList[0].State != calls.CallEnded || list.NextFlag != 0 {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}

	// A domain validation error keeps its message and fields.
	p := decodeProblem(t, do(h, req{method: "POST", path: "/calls", body: `{"invitees":["alice"]}`, header: authed(t, "alice")}), 400, "invalid_request")
	if p.Detail == "" || p.Detail == "invalid request" {
		t.Fatalf("self-invite problem: %+v", p)
	}
	decodeProblem(t, do(h, req{method: "GET", path: "/calls/zzzzzzzzzzzzzzzzzzzz", header: authed(t, "alice")}), 404, "call_not_found")
}

func mustDecode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// Requests with one Idempotency-Key at the same time run one after the
// other in the store: one creates the call, the others replay its answer
// byte for byte; nobody gets 409, and one call exists.
func TestConcurrentKeyedCreatesMakeOneCall(t *testing.T) {
	store := openStore(t)
	svc := calls.NewService(calls.Options{Store: store})
	h := newTestHandler(t, func(d *Deps) {
		d.Service = svc
		d.Idempotency = store
	})
	alice := authed(t, "alice")
	alice["Idempotency-Key"] = "together"
	const n = 16
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			answers[i] = do(h, req{method: "POST", path: "/calls", body: `{"invitees":["bob"]}`, header: alice})
		})
	}
	wg.Wait()
	fresh := 0
	for _, w := range answers {
		if w.Code != 201 || w.Body.String() != answers[0].Body.String() {
			t.Fatalf("answer %d %s, want 201 %s", w.Code, w.Body, answers[0].Body)
		}
		if w.Header().Get("Idempotent-Replayed") != "true" {
			fresh++
		}
	}
	list, err := svc.List(context.Background(), calls.Actor{UserID: "bob"}, 10, 0)
	if err != nil || fresh != 1 || len(list.CallList) != 1 {
		t.Fatalf("%d fresh answers and %d calls (%v), want 1 and 1", fresh, len(list.CallList), err)
	}
}

// lookupCounter counts the middleware's own reads of a key.
type lookupCounter struct {
	IdempotencyStore
	lookups atomic.Int32
}

func (c *lookupCounter) LookupIdempotency(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	c.lookups.Add(1)
	return c.IdempotencyStore.LookupIdempotency(ctx, scope, key, now)
}

// The call actions record their key in the use-case's transaction
// (recordsInTx), so a keyed request costs no lookup of its own before it
// runs; replays, refusals and mismatches still answer as the contract
// says. The middleware reads the key only when a refused request finds it
// already taken.
func TestKeyedActionsReadTheirKeyInTheirTransaction(t *testing.T) {
	store := openStore(t)
	counter := &lookupCounter{IdempotencyStore: store}
	h := newTestHandler(t, func(d *Deps) {
		d.Service = calls.NewService(calls.Options{Store: store})
		d.Idempotency = counter
	})
	keyed := func(key string) map[string]string {
		hdr := authed(t, "alice")
		hdr["Idempotency-Key"] = key
		return hdr
	}
	post := func(path, key, body string) *httptest.ResponseRecorder {
		return do(h, req{method: "POST", path: path, body: body, header: keyed(key)})
	}

	first := post("/calls", "k1", `{"invitees":["bob"]}`)
	again := post("/calls", "k1", `{"invitees":["bob"]}`)
	if first.Code != 201 || again.Code != 201 || again.Body.String() != first.Body.String() ||
		again.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("create %d %s, replay %d %s %v", first.Code, first.Body, again.Code, again.Body, again.Header())
	}
	// Refused in the use-case, stored after it, replayed from its transaction.
	decodeProblem(t, post("/calls/nope/accept", "k2", ``), 404, "call_not_found")
	refused := post("/calls/nope/accept", "k2", ``)
	decodeProblem(t, refused, 404, "call_not_found")
	if refused.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a refusal's retry was not replayed: %v", refused.Header())
	}
	if n := counter.lookups.Load(); n != 0 {
		t.Fatalf("the middleware looked keys up %d times, want 0", n)
	}
	// Another body under a key: the use-case finds the mismatch (422), and
	// the middleware, finding the key taken, answers the same.
	decodeProblem(t, post("/calls", "k1", `{"invitees":["carol"]}`), 422, "idempotency_conflict")
	// Refused before any use-case ran (the body does not decode), under a
	// key another request holds: still 422, from the middleware's lookup.
	decodeProblem(t, post("/calls", "k1", `{"invitees":["bob"]} {}`), 422, "idempotency_conflict")
	if n := counter.lookups.Load(); n != 2 {
		t.Fatalf("the middleware looked keys up %d times, want 2 (the taken keys)", n)
	}
}
