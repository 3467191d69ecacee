package handlers

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync"
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
