package e2e

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// The app signs its users in with its own identity provider, which issues
// RS256, ES256 or EdDSA tokens and publishes a JWKS; callsig, given the
// JWKS address, accepts those tokens beside its HS256 ones.

// startWithProvider starts callsig trusting idp's keys and waits until it
// has fetched them (a token signed with "rsa-1" is no longer refused for
// want of keys; whether its claims pass depends on the test's settings).
func startWithProvider(t *testing.T, idp *testkit.IdentityProvider, opts ...testkit.Option) *testkit.Server {
	t.Helper()
	opts = append([]testkit.Option{testkit.WithConfig(func(c *app.Config) {
		c.JWKSURL, c.JWTAudience = idp.URL(), testkit.IdentityProviderAudience
	})}, opts...)
	s := testkit.Start(t, opts...)
	tok := idp.Token("rsa-1", jwt.MapClaims{"sub": "probe"})
	wait.For(t, 10*time.Second, "the provider's keys to be fetched", func() bool {
		code, detail := try(s, tok)
		return code == http.StatusOK || code == http.StatusUnauthorized && !strings.Contains(detail, "not available yet")
	})
	return s
}

// as returns a client of s authenticated by token.
func as(s *testkit.Server, user, token string) *testkit.Client {
	c := s.Client(user)
	c.Token = token
	return c
}

// try sends GET /calls with token and returns the status and the problem
// detail: usable from any goroutine, unlike the testkit client.
func try(s *testkit.Server, token string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, s.URL+"/calls", nil)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := oneShot.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	var p testkit.Problem
	_ = json.NewDecoder(res.Body).Decode(&p)
	if res.StatusCode == http.StatusUnauthorized && (res.Header.Get("Content-Type") != "application/problem+json" || p.Code != "unauthorized" ||
		!strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer")) {
		return 0, fmt.Sprintf("401 without a problem+json unauthorized body and challenge: %+v %v", p, res.Header)
	}
	return res.StatusCode, p.Detail
}

// oneShot sends each request on its own connection: a pooled client can
// leave a connection dialled but never used, which the server's shutdown
// waits five seconds for.
var oneShot = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// wantRefused checks that token gets 401 unauthorized with a detail
// containing detail.
func wantRefused(t *testing.T, s *testkit.Server, token, detail string) {
	t.Helper()
	p := as(s, "x", token).Get("/calls").WantProblem(http.StatusUnauthorized, "unauthorized")
	if !strings.Contains(p.Detail, detail) {
		t.Fatalf("detail %q, want it to contain %q", p.Detail, detail)
	}
}

// Tokens signed with each algorithm work for a whole call, beside callsig's
// own HS256 tokens: the user ID comes from sub whatever signed the token.
func TestIdentityProviderAlgorithms(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp)
	alice := as(s, "alice", idp.Token("rsa-1", jwt.MapClaims{"sub": "alice"}))
	bob := as(s, "bob", idp.Token("ec-1", jwt.MapClaims{"sub": "bob"}))
	carol := as(s, "carol", idp.Token("ed-1", jwt.MapClaims{"sub": "carol"}))
	dave := s.Client("dave") // HS256, minted with the server's secret

	res := alice.Invite(map[string]any{"mode": "advanced"}, "bob", "carol", "dave")
	bob.Action(res.CallID, "accept", map[string]any{}).Want(http.StatusOK)
	carol.Action(res.CallID, "accept", map[string]any{}).Want(http.StatusOK)
	dave.Action(res.CallID, "accept", map[string]any{}).Want(http.StatusOK)
	got := carol.GetCall(res.CallID)
	if got.Caller != "alice" {
		t.Fatalf("caller %q", got.Caller)
	}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		if st := testkit.UserState(got, u); st != "accepted" {
			t.Errorf("%s is %q, want accepted; call %+v", u, st, got)
		}
	}
}

// The provider publishes a new key and signs with it: the first token
// naming the new kid makes callsig fetch the set again, and it is accepted.
func TestIdentityProviderKeyRotation(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp)
	before := idp.Hits()

	idp.AddKey("rsa-2", jwt.SigningMethodRS256)
	as(s, "alice", idp.Token("rsa-2", jwt.MapClaims{"sub": "alice"})).Get("/calls").Want(http.StatusOK)
	if got := idp.Hits(); got != before+1 {
		t.Fatalf("provider hits %d, want %d: one refresh for the new kid", got, before+1)
	}
	// Now cached: more tokens with it cost the provider nothing.
	for range 5 {
		as(s, "bob", idp.Token("rsa-2", jwt.MapClaims{"sub": "bob"})).Get("/calls").Want(http.StatusOK)
	}
	as(s, "alice", idp.Token("rsa-1", jwt.MapClaims{"sub": "alice"})).Get("/calls").Want(http.StatusOK)
	if got := idp.Hits(); got != before+1 {
		t.Fatalf("provider hits %d after cached kids, want %d", got, before+1)
	}
}

// A flood of tokens naming made-up kids is refused, and the refreshes
// they cause are rate-limited: the provider sees one, not one per token.
func TestIdentityProviderUnknownKIDFlood(t *testing.T) {
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp)
	before := idp.Hits()
	start := time.Now()

	const flood = 200
	signer := idp.PrivateKey("rsa-1")
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[string]int{}
	)
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Signed with the provider's own key, but naming a kid it
			// never published.
			kid := "bogus-" + strconv.Itoa(i)
			code, detail := try(s, idp.Sign(jwt.SigningMethodRS256, signer, kid, jwt.MapClaims{"sub": "mallory"}))
			mu.Lock()
			answers[strconv.Itoa(code)+" "+detail]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n := answers["401 token kid is not in the identity provider's key set"]; n != flood {
		t.Fatalf("answers %v, want all %d refused as an unknown kid", answers, flood)
	}
	// One fetch per unknown-kid period (30 s) at most, plus the one the
	// limiter starts with.
	allowed := 1 + int(elapsed/(30*time.Second)) + 1
	if got := idp.Hits() - before; got < 1 || got > allowed {
		t.Fatalf("provider hit %d times by %d unknown kids in %v, want 1..%d", got, flood, elapsed, allowed)
	}
	// Known keys are untouched by the flood.
	as(s, "alice", idp.Token("ec-1", jwt.MapClaims{"sub": "alice"})).Get("/calls").Want(http.StatusOK)
}

// The algorithm is never the token's choice: each is pinned to one key
// type, "none" and HS256 with the provider's public key are forgeries,
// and keys callsig does not accept refuse their tokens.
func TestIdentityProviderWrongAlgorithm(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	idp.AddBareKey("ec-bare", jwt.SigningMethodES256)
	idp.AddBareKey("rsa-bare", jwt.SigningMethodRS256)
	idp.AddKey("ps-1", jwt.SigningMethodPS256)
	idp.AddKey("ec384-1", jwt.SigningMethodES384)
	idp.AddWeakRSAKey("rsa-weak")
	idp.AddEncryptionKey("rsa-enc", jwt.SigningMethodRS256)
	s := startWithProvider(t, idp)

	rsaPub := idp.PublicKey("rsa-1").(*rsa.PublicKey)
	rsaDER, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		t.Fatal(err)
	}
	edPub := idp.PublicKey("ed-1").(ed25519.PublicKey)
	ecPub := idp.PublicKey("ec-1").(*ecdsa.PublicKey)
	ecDER, err := x509.MarshalPKIXPublicKey(ecPub)
	if err != nil {
		t.Fatal(err)
	}
	// An RS256 header over an ES256 signature made with the EC key.
	rsHeaderOnEC := func(kid string) string {
		tok := idp.Token(kid, jwt.MapClaims{"sub": "mallory"})
		return swapAlg(t, tok, "RS256")
	}

	tests := []struct {
		name, token, detail string
	}{
		{"RS256 header on an EC key", rsHeaderOnEC("ec-1"), "no signing key for its alg"},
		{"RS256 header on an EC key without alg", rsHeaderOnEC("ec-bare"), "no signing key for its alg"},
		{"ES256 header on an RSA key without alg", swapAlg(t, idp.Token("rsa-bare", nil), "ES256"), "no signing key for its alg"},
		{"EdDSA header on an RSA key", swapAlg(t, idp.Token("rsa-1", nil), "EdDSA"), "no signing key for its alg"},
		{"none", idp.Sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", nil), "signature"},
		{"HS256 with the RSA public key (DER)", idp.Sign(jwt.SigningMethodHS256, rsaDER, "rsa-1", nil), "signature"},
		{"HS256 with the RSA modulus", idp.Sign(jwt.SigningMethodHS256, rsaPub.N.Bytes(), "rsa-1", nil), "signature"},
		{"HS256 with the EC public key", idp.Sign(jwt.SigningMethodHS256, ecDER, "ec-1", nil), "signature"},
		{"HS256 with the Ed25519 public key", idp.Sign(jwt.SigningMethodHS256, []byte(edPub), "ed-1", nil), "signature"},
		{"PS256 (not accepted)", idp.Token("ps-1", nil), "signature"},
		{"ES384 (not accepted)", idp.Token("ec384-1", nil), "signature"},
		{"ES256 header on a P-384 key", swapAlg(t, idp.Token("ec384-1", nil), "ES256"), "no signing key for its alg"},
		{"RSA key under 2048 bits", idp.Token("rsa-weak", nil), "no signing key for its alg"},
		{"key for encryption, not signatures", idp.Token("rsa-enc", nil), "no signing key for its alg"},
		{"no kid", idp.Sign(jwt.SigningMethodRS256, idp.PrivateKey("rsa-1"), "", nil), "token has no kid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRefused(t, s, tt.token, tt.detail) })
	}
}

// swapAlg rewrites a token's header alg, keeping its signature: a token
// claiming an algorithm other than the one it was signed with.
func swapAlg(t *testing.T, token, alg string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	p := jwt.NewParser()
	raw, err := p.DecodeSegment(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	h["alg"] = alg
	raw, err = json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	parts[0] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// The provider goes down: keys already fetched keep working, a kid not
// seen yet is refused with 401 (the refresh it causes fails), never 500.
func TestIdentityProviderDown(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp)
	idp.Down()
	before := idp.Hits()

	alice := as(s, "alice", idp.Token("ed-1", jwt.MapClaims{"sub": "alice"}))
	bob := as(s, "bob", idp.Token("ec-1", jwt.MapClaims{"sub": "bob"}))
	callID := alice.Invite(nil, "bob").CallID
	bob.Action(callID, "accept", map[string]any{}).Want(http.StatusOK)

	idp.AddKey("rsa-2", jwt.SigningMethodRS256)
	wantRefused(t, s, idp.Token("rsa-2", nil), "token kid is not in the identity provider's key set")
	// One refresh attempt (Go's HTTP client retries a GET whose reused
	// connection was dropped unanswered once).
	if got := idp.Hits() - before; got < 1 || got > 2 {
		t.Fatalf("provider hit %d times, want one refresh attempt for the new kid", got)
	}
	// The failed refresh dropped nothing.
	as(s, "carol", idp.Token("rsa-1", jwt.MapClaims{"sub": "carol"})).Get("/calls").Want(http.StatusOK)
}

// The provider is down when callsig starts: callsig starts anyway, logs
// it, serves HS256 tokens, refuses the provider's with 401 (not 500), and
// accepts them once the provider is back and the keys have arrived.
func TestIdentityProviderDownAtStart(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	idp.Down()
	logs := &logBuffer{}
	s := testkit.Start(t, testkit.WithLogs(logs), testkit.WithConfig(func(c *app.Config) {
		c.JWKSURL, c.JWTAudience = idp.URL(), testkit.IdentityProviderAudience
	}))
	wait.For(t, 10*time.Second, "a fetch of the key set", func() bool { return idp.Hits() >= 1 })
	wait.For(t, 10*time.Second, "the failed fetch to be logged", func() bool {
		return logs.has("identity provider key set not fetched")
	})

	s.Client("dave").Get("/calls").Want(http.StatusOK)
	// The server cannot check the token: 503, not a 401 that tells the
	// client its token is bad; a stream is refused with a retry.
	tok := idp.Token("rsa-1", jwt.MapClaims{"sub": "alice"})
	res := as(s, "alice", tok).Get("/calls")
	p := res.WantProblem(http.StatusServiceUnavailable, "unavailable")
	if !strings.Contains(p.Detail, "signing keys are not available yet") || res.Header.Get("Retry-After") != "5" {
		t.Fatalf("detail %q, Retry-After %q", p.Detail, res.Header.Get("Retry-After"))
	}
	st := s.OpenStream(testkit.StreamOptions{User: "alice", NoAuthHeader: true, Query: url.Values{"access_token": {tok}}})
	st.WaitFor("refused", nil, 10*time.Second)
	st.Close()

	idp.Up()
	wait.For(t, 10*time.Second, "the provider's token to be accepted once it is back", func() bool {
		code, detail := try(s, tok)
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Fatalf("provider token answered %d %s", code, detail)
		}
		return code == http.StatusOK
	})
}

// CALLSIG_JWT_USER_CLAIM picks the claim holding the user ID: here the
// provider's uid, while sub is something callsig cannot use as an ID (as
// Auth0's "auth0|123" is). A token without it, or with an invalid one, is
// 401; callsig's own HS256 tokens carry the user in that claim too.
func TestIdentityProviderUserClaim(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp, testkit.WithConfig(func(c *app.Config) { c.JWTUserClaim = "uid" }))

	alice := as(s, "alice", idp.Token("rsa-1", jwt.MapClaims{"sub": "auth0|5f1c", "uid": "alice"}))
	bob := as(s, "bob", idp.Token("ec-1", jwt.MapClaims{"sub": "auth0|77aa", "uid": "bob"}))
	res := alice.Invite(nil, "bob")
	if res.Call.Caller != "alice" || testkit.UserState(res.Call, "bob") != "inviting" {
		t.Fatalf("call %+v", res.Call)
	}
	bob.Action(res.CallID, "accept", map[string]any{}).Want(http.StatusOK)
	s.Client("carol").Get("/calls").Want(http.StatusOK) // HS256, minted with uid

	wantRefused(t, s, idp.Token("rsa-1", jwt.MapClaims{"sub": "alice"}), "token has no uid claim")
	wantRefused(t, s, idp.Token("ed-1", jwt.MapClaims{"uid": "alice bob"}), "token uid is not a valid user ID")
	wantRefused(t, s, idp.Token("ed-1", jwt.MapClaims{"uid": 42}), "token uid is not a valid user ID")
	wantRefused(t, s, idp.Token("ed-1", jwt.MapClaims{"uid": strings.Repeat("a", 129)}), "token uid is not a valid user ID")
}

// The email claim as the user ID, as an app keyed by email would use it.
func TestIdentityProviderEmailClaim(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp, testkit.WithConfig(func(c *app.Config) { c.JWTUserClaim = "email" }))
	alice := as(s, "alice@example.com", idp.Token("ed-1", jwt.MapClaims{"sub": "1", "email": "alice@example.com"}))
	res := alice.Invite(nil, "bob@example.com")
	if res.Call.Caller != "alice@example.com" {
		t.Fatalf("caller %q, want alice@example.com", res.Call.Caller)
	}
	wantRefused(t, s, idp.Token("ed-1", jwt.MapClaims{"sub": "1"}), "token has no email claim")
}

// GET /events takes a provider's token as ?access_token= too (EventSource
// cannot send headers), and the stream is that token's user's.
func TestIdentityProviderEventStream(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp)
	bobToken := idp.Token("ec-1", jwt.MapClaims{"sub": "bob"})
	st := s.OpenStream(testkit.StreamOptions{User: "bob", NoAuthHeader: true, Query: url.Values{"access_token": {bobToken}}})
	callID := as(s, "alice", idp.Token("ed-1", jwt.MapClaims{"sub": "alice"})).Invite(nil, "bob").CallID
	e := st.WaitFor("callInvitationReceived", func(e testkit.Event) bool { return e.CallID() == callID }, eventWait)
	if e.Fields()["caller"] != "alice" {
		t.Fatalf("invitation %v", e)
	}

	res := s.StreamResponse(testkit.StreamOptions{User: "bob", NoAuthHeader: true,
		Query: url.Values{"access_token": {swapAlg(t, bobToken, "RS256")}}})
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("forged stream token: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// The claim rules of HS256 tokens hold for the provider's: exp required
// and in the future, iat not in the future, numeric times in years 1–9999
// (nbf and iat past it are refused, never wrapped around), iss and aud
// when configured; role=admin does not open the admin endpoints.
func TestIdentityProviderClaimRules(t *testing.T) {
	t.Parallel()
	idp := testkit.NewIdentityProvider(t)
	s := startWithProvider(t, idp, testkit.WithConfig(func(c *app.Config) { c.JWTIssuer, c.JWTAudience = "https://idp.example", "callsig" }))
	good := jwt.MapClaims{"iss": "https://idp.example", "aud": "callsig"}
	with := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range good {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	as(s, "alice", idp.Token("rsa-1", with(jwt.MapClaims{"sub": "alice"}))).Get("/calls").Want(http.StatusOK)

	now := time.Now()
	tests := []struct {
		name   string
		claims jwt.MapClaims
		detail string
	}{
		{"expired", with(jwt.MapClaims{"exp": now.Add(-time.Minute).Unix()}), "token is expired"},
		{"no exp", with(jwt.MapClaims{"exp": nil}), "token has no exp claim"},
		{"exp as a string", with(jwt.MapClaims{"exp": strconv.FormatInt(now.Add(time.Hour).Unix(), 10)}), "must be JSON numbers"},
		{"iat in the future", with(jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}), "token iat is in the future"},
		{"not valid yet", with(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}), "token is not valid yet"},
		// Too large for int64 seconds: must not wrap around to the past.
		{"nbf 1e300", with(jwt.MapClaims{"nbf": 1e300}), "token is not valid yet"},
		{"iat 1e300", with(jwt.MapClaims{"iat": 1e300}), "token iat is in the future"},
		{"wrong issuer", with(jwt.MapClaims{"iss": "https://evil.example"}), "wrong issuer"},
		{"no issuer", with(jwt.MapClaims{"iss": nil}), "token has no iss claim"},
		{"wrong audience", with(jwt.MapClaims{"aud": "other"}), "wrong audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRefused(t, s, idp.Token("ec-1", tt.claims), tt.detail) })
	}

	// The provider's role claim is the app's own business: only callsig's
	// own (HS256) tokens make an admin.
	notAdmin := as(s, "ops", idp.Token("ed-1", with(jwt.MapClaims{"sub": "ops", "role": "admin"})))
	notAdmin.Get("/webhooks").WantProblem(http.StatusForbidden, "forbidden")
	user := as(s, "alice", idp.Token("ed-1", with(jwt.MapClaims{"sub": "alice"})))
	user.Get("/webhooks").WantProblem(http.StatusForbidden, "forbidden")
}
