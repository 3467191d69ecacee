package handlers

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/internal/wait"
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

// fromAddress serves h on loopback as if every request came from addr (a
// public address: loopback is not limited), for real concurrent clients.
func fromAddress(t *testing.T, h http.Handler, addr string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = addr
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fire sends n requests with the bearer tokens of tok(i) at once and
// counts the answers by status. It also returns how many failed logins
// the address may have had meanwhile: its budget and what refilled.
func fire(t *testing.T, url string, n int, tok func(i int) string) (codes map[int]int, budget int) {
	t.Helper()
	began := time.Now()
	defer func() { budget = failedAuthBurst + int(time.Since(began).Seconds()*failedAuthRate) }()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}, Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	codes = map[int]int{}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rq, _ := http.NewRequest("GET", url+"/calls", nil)
			rq.Header.Set("Authorization", "Bearer "+tok(i))
			<-start
			resp, err := client.Do(rq)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return codes, 0
}

// An address's failed logins are a budget of token checks: requests that
// arrive together must not all pass the "is it used up?" check before any
// of them is counted. Tokens whose kid the provider's key set lacks wait
// for the fetch in flight, so every one sent meanwhile was checked against
// a full budget and verified: 60 at once got 60 verifications (401) where
// the budget is 20, and the fetch window is up to 5 s long.
func TestFailedLoginBudgetHoldsForConcurrentRequests(t *testing.T) {
	doc, _ := ed25519KeySet(t)
	var hits atomic.Int64
	release := make(chan struct{})
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) > 1 { // the fetch for an unknown kid: held until all are waiting
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write(doc)
	}))
	t.Cleanup(provider.Close)
	j, err := NewJWKS(JWKSOptions{URL: provider.URL})
	if err != nil {
		t.Fatal(err)
	}
	runJWKS(t, j)
	h := newTestHandler(t, func(d *Deps) { d.RateLimit, d.Events, d.Auth.JWKS = 1000, &fakeStream{}, j })
	srv := fromAddress(t, h, "203.0.113.9:4000")

	_, junk, _ := ed25519.GenerateKey(rand.Reader)
	const n = 3 * failedAuthBurst
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = signEd(t, "made-up", junk)
	}
	go func() {
		wait.For(t, 10*time.Second, "the fetch for the unknown kid", func() bool { return hits.Load() > 1 })
		time.Sleep(500 * time.Millisecond) // the others arrive and wait for it
		close(release)
	}()
	codes, budget := fire(t, srv.URL, n, func(i int) string { return tokens[i] })
	if codes[401] > budget || codes[401]+codes[429] != n {
		t.Fatalf("%d bad tokens at once from one address: %v; want at most %d verified (401), the rest 429", n, codes, budget)
	}
}

// Without a provider the window is a signature check long; many bad
// tokens at once still get no more than the budget.
func TestFailedLoginBudgetHoldsForConcurrentHS256(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.RateLimit, d.Events = 1000, &fakeStream{} })
	srv := fromAddress(t, h, "203.0.113.10:4000")
	const n = 10 * failedAuthBurst
	tokens := make([]string, n)
	for i := range tokens {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix(), "jti": i}).
			SignedString([]byte("a-guessed-secret-0123456789abcdef"))
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok
	}
	codes, budget := fire(t, srv.URL, n, func(i int) string { return tokens[i] })
	if codes[401] > budget || codes[401]+codes[429] != n {
		t.Fatalf("%d bad tokens at once from one address: %v; want at most %d verified (401), the rest 429", n, codes, budget)
	}
}

// Users behind one address (an office's NAT, a carrier's) whose tokens
// expired together, say laptops waking up and their streams reconnecting
// with the token they had, are not guessing: their tokens were signed by
// the issuer. They get 401 "token is expired", as always, but do not use
// up the address's failed logins, so a colleague's fresh token, never seen
// before, is not refused with 429 for them.
func TestExpiredTokensDoNotUseUpTheAddress(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.RateLimit, d.Events = 1000, &fakeStream{} })
	const office = "198.51.100.20:4000"
	var told []int
	for i := range 3 * failedAuthBurst {
		expired := map[string]string{"Authorization": "Bearer " + token(t, fmt.Sprintf("user%d", i), jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})}
		told = append(told, do(h, req{method: "GET", path: "/calls", header: expired, remote: office}).Code)
	}
	if w := do(h, req{method: "GET", path: "/calls", header: authed(t, "carol"), remote: office}); w.Code == 401 || w.Code == 429 {
		t.Fatalf("a fresh valid token from the office after %d colleagues' expired ones: %d %s, want it admitted", len(told), w.Code, w.Body)
	}
	for i, code := range told {
		if code != 401 {
			t.Fatalf("expired token %d: %d, want 401 (expired)", i+1, code)
		}
	}
	// A forged token still counts: guessing from the office is limited.
	forged := map[string]string{"Authorization": "Bearer " + token(t, "carol", nil) + "x"}
	for range failedAuthBurst {
		do(h, req{method: "GET", path: "/calls", header: forged, remote: office})
	}
	decodeProblem(t, do(h, req{method: "GET", path: "/calls", header: forged, remote: office}), 429, "rate_limited")
}
