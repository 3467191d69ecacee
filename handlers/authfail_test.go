package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Failed logins are limited per address: after failedAuthBurst bad tokens
// an address gets 429 with Retry-After, before its token is looked at (a
// good one too: that is the address's share), unless the token was
// verified lately (it costs no signature check, and users behind one NAT
// keep the sessions they have), while other addresses, and private ones
// (a proxy's), go on. A bad admin token counts alike.
func TestFailedLoginsAreLimitedPerAddress(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.RateLimit, d.Events = 1000, &fakeStream{} })
	bad := map[string]string{"Authorization": "Bearer not-a-token"}
	good := authed(t, "alice")
	get := func(remote string, header map[string]string) (int, string) {
		w := do(h, req{method: "GET", path: "/calls", header: header, remote: remote})
		return w.Code, w.Header().Get("Retry-After")
	}
	const guesser = "203.0.113.7:4000"
	// bob signed in from the same address (a carrier's NAT) before the
	// guesser used up its failed logins.
	known := authed(t, "bob")
	if code, _ := get(guesser, known); code == 401 || code == 429 {
		t.Fatalf("bob's token before the failures: %d, want it admitted", code)
	}
	for i := range failedAuthBurst {
		if code, _ := get(guesser, bad); code != 401 {
			t.Fatalf("bad token %d: %d, want 401", i+1, code)
		}
	}
	if code, after := get(guesser, bad); code != 429 || after == "" {
		t.Fatalf("bad token %d: %d (Retry-After %q), want 429 with Retry-After", failedAuthBurst+1, code, after)
	}
	if code, _ := get(guesser, good); code != 429 {
		t.Fatalf("a good token from the limited address: %d, want 429", code)
	}
	// Its event stream waits too, answered as EventSource comes back from:
	// an empty stream with the wait as its retry, and the refused event.
	if w := do(h, req{method: "GET", path: "/events", header: good, remote: guesser}); w.Code != 200 ||
		w.Header().Get("Content-Type") != "text/event-stream" || !strings.Contains(w.Body.String(), "retry: ") ||
		!strings.Contains(w.Body.String(), "event: refused\n") {
		t.Fatalf("a stream from the limited address: %d %q %q, want an empty stream with a retry and the refused event", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	// A token verified lately costs no signature check: bob goes on.
	if code, _ := get(guesser, known); code == 401 || code == 429 {
		t.Fatalf("bob's token, verified before, from the limited address: %d, want it admitted", code)
	}
	// The admin routes share the authenticator, and its count.
	a := newAuthenticator(AuthConfig{Secret: testSecret, AdminToken: "admin-secret-0123456789abcdef0123"})
	a.limitFailures(time.Now)
	admin := a.requireAdmin(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	wrong := map[string]string{"Authorization": "Bearer wrong-admin-token"}
	for range failedAuthBurst {
		decodeProblem(t, do(admin, req{method: "GET", path: "/webhooks", header: wrong, remote: guesser}), 401, "unauthorized")
	}
	decodeProblem(t, do(admin, req{method: "GET", path: "/webhooks", header: wrong, remote: guesser}), 429, "rate_limited")
	// The right admin token waits too: were it let through while wrong
	// ones get 429, the answer would tell the guesser it found it.
	right := map[string]string{"Authorization": "Bearer admin-secret-0123456789abcdef0123"}
	decodeProblem(t, do(admin, req{method: "GET", path: "/webhooks", header: right, remote: guesser}), 429, "rate_limited")
	if code, _ := get("203.0.113.8:4000", good); code == 401 || code == 429 {
		t.Fatalf("a good token from another address: %d", code)
	}
	for i := range failedAuthBurst * 2 {
		if code, _ := get(fmt.Sprintf("10.0.0.1:%d", 4000+i), bad); code != 401 {
			t.Fatalf("bad token %d from a private address: %d, want 401 (not limited)", i+1, code)
		}
	}
}
