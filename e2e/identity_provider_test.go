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
// has fetched them (a token signed with "rsa-1" is accepted).
func startWithProvider(t *testing.T, idp *testkit.IdentityProvider, opts ...testkit.Option) *testkit.Server {
	t.Helper()
	opts = append(opts, testkit.WithConfig(func(c *app.Config) { c.JWKSURL = idp.URL() }))
	s := testkit.Start(t, opts...)
	tok := idp.Token("rsa-1", jwt.MapClaims{"sub": "probe"})
	wait.For(t, 10*time.Second, "the provider's keys to be fetched", func() bool {
		code, _ := try(s, tok)
		return code == http.StatusOK
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
	idp := testkit.NewIdentityProvider(t)
	idp.AddBareKey("ec-bare", jwt.SigningMethodES256)
	idp.AddBareKey("rsa-bare", jwt.SigningMethodRS256)
	idp.AddKey("ps-1", jwt.SigningMethodPS256)
	idp.AddKey("ec384-1", jwt.SigningMethodES384)
	idp.AddWeakRSAKey("rsa-weak")
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
		{"RS256 header on an EC key", rsHeaderOnEC("ec-1"), "alg does not fit"},
		{"RS256 header on an EC key without alg", rsHeaderOnEC("ec-bare"), "alg does not fit"},
		{"ES256 header on an RSA key without alg", swapAlg(t, idp.Token("rsa-bare", nil), "ES256"), "alg does not fit"},
		{"EdDSA header on an RSA key", swapAlg(t, idp.Token("rsa-1", nil), "EdDSA"), "alg does not fit"},
		{"none", idp.Sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa-1", nil), "signature"},
		{"HS256 with the RSA public key (DER)", idp.Sign(jwt.SigningMethodHS256, rsaDER, "rsa-1", nil), "signature"},
		{"HS256 with the RSA modulus", idp.Sign(jwt.SigningMethodHS256, rsaPub.N.Bytes(), "rsa-1", nil), "signature"},
		{"HS256 with the EC public key", idp.Sign(jwt.SigningMethodHS256, ecDER, "ec-1", nil), "signature"},
		{"HS256 with the Ed25519 public key", idp.Sign(jwt.SigningMethodHS256, []byte(edPub), "ed-1", nil), "signature"},
		{"PS256 (not accepted)", idp.Token("ps-1", nil), "signature"},
		{"ES384 (not accepted)", idp.Token("ec384-1", nil), "signature"},
		{"ES256 header on a P-384 key", swapAlg(t, idp.Token("ec384-1", nil), "ES256"), "alg does not fit"},
		{"RSA key under 2048 bits", idp.Token("rsa-weak", nil), "alg does not fit"},
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
