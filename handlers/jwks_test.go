package handlers

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/internal/wait"
)

// A provider that never answers holds neither startup nor shutdown:
// NewJWKS fetches nothing, and Run returns as soon as its context ends,
// with the fetch still hanging.
func TestJWKSRunStopsWhileFetchHangs(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer provider.Close()
	defer close(release)

	j, err := NewJWKS(JWKSOptions{URL: provider.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- j.Run(ctx) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("Run never fetched the key set")
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return while its fetch hung")
	}
	if j.current.Load() != nil {
		t.Fatal("keys without a successful fetch")
	}
}

// Each algorithm fits one key type only.
func TestKeyFits(t *testing.T) {
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	keys := map[string]any{"rsa2048": &rsa2048.PublicKey, "rsa1024": &rsa1024.PublicKey, "p256": &p256.PublicKey,
		"p384": &p384.PublicKey, "ed25519": ed, "secret": []byte("0123456789abcdef0123456789abcdef")}
	fits := map[string]string{"RS256": "rsa2048", "ES256": "p256", "EdDSA": "ed25519"}
	for _, alg := range []string{"RS256", "ES256", "EdDSA", "HS256", "PS256", "ES384", "none"} {
		for name, key := range keys {
			if got, want := keyFits(alg, key), fits[alg] == name; got != want {
				t.Errorf("keyFits(%s, %s) = %v, want %v", alg, name, got, want)
			}
		}
	}
}

// The periodic refresh failing (the provider down after a good fetch)
// keeps the keys already fetched: tokens signed with them stay valid.
func TestJWKSRefreshFailureKeepsKeys(t *testing.T) {
	doc, priv := ed25519KeySet(t)
	var down atomic.Bool
	var hits atomic.Int64
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(doc)
	}))
	defer provider.Close()

	j, err := NewJWKS(JWKSOptions{URL: provider.URL, RefreshEvery: time.Millisecond, RetryMin: time.Millisecond, RetryMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- j.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	a := newAuthenticator(AuthConfig{Secret: testSecret, JWKS: j})
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = "ed-1"
	signed, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the first fetch", func() bool { return j.current.Load() != nil })
	down.Store(true)
	failedFrom := hits.Load()
	wait.For(t, 10*time.Second, "refreshes against the provider while it is down", func() bool { return hits.Load() >= failedFrom+3 })
	if user, _, _, err := a.parse(context.Background(), signed); err != nil || user != "alice" {
		t.Fatalf("after failed refreshes: %q %v", user, err)
	}
}

// A client naming a made-up kid that hangs up at once does not spend the
// unknown-kid refresh for everyone: the refresh ran on its request's
// context, was cancelled with it, and still took the rate limiter's slot
// (30 s), so a real token signed with the provider's newly published key
// was refused, and an unauthenticated client repeating this every 30 s
// left new keys to the hourly refresh.
func TestHungUpUnknownKIDDoesNotStallKeyRotation(t *testing.T) {
	doc1, _ := ed25519KeySet(t)
	doc2, priv2 := ed25519KeySet(t) // the rotated key, also kid "ed-1" in its doc
	var rotated atomic.Bool
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // a real provider is a WAN and a TLS handshake away
		case <-time.After(150 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		if rotated.Load() {
			_, _ = w.Write(bytes.Replace(doc2, []byte(`"ed-1"`), []byte(`"ed-2"`), 1))
			return
		}
		_, _ = w.Write(doc1)
	}))
	defer provider.Close()
	j, err := NewJWKS(JWKSOptions{URL: provider.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- j.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	wait.For(t, 10*time.Second, "the first fetch", func() bool { return j.current.Load() != nil })
	a := newAuthenticator(AuthConfig{Secret: testSecret, JWKS: j})
	sign := func(kid string, key ed25519.PrivateKey) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	rotated.Store(true)
	_, junk, _ := ed25519.GenerateKey(rand.Reader) // no valid signature needed
	gone, hangUp := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, _, _, _ = a.parse(gone, sign("made-up", junk))
	hangUp()
	if user, _, _, err := a.parse(context.Background(), sign("ed-2", priv2)); err != nil || user != "alice" {
		t.Fatalf("a token signed with the key the provider rotated to: %q %v", user, err)
	}
}
