package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// IdentityProvider is an app's identity provider on a loopback port, as
// Keycloak, Auth0 or Firebase would be: it publishes its public keys as a
// JSON Web Key Set at URL() and signs user tokens with the private halves.
// It starts with one published key per algorithm callsig accepts (kids
// "rsa-1", "ec-1", "ed-1"), counts every request to its JWKS, and can add
// keys (rotation) or be down (it then drops each connection unanswered).
type IdentityProvider struct {
	t   testing.TB
	srv *httptest.Server

	mu    sync.Mutex
	keys  map[string]idpKey
	order []string // published kids, in publication order
	hits  int
	down  bool
}

type idpKey struct {
	method  jwt.SigningMethod
	private crypto.Signer
	// bareJWK leaves "alg" out of the published key, as some providers
	// do: the key's type alone must then pin the algorithm.
	bareJWK bool
	// encryption publishes the key with "use": "enc".
	encryption bool
}

// NewIdentityProvider starts a provider for the test's lifetime.
func NewIdentityProvider(t testing.TB) *IdentityProvider {
	t.Helper()
	p := &IdentityProvider{t: t, keys: map[string]idpKey{}}
	p.AddKey("rsa-1", jwt.SigningMethodRS256)
	p.AddKey("ec-1", jwt.SigningMethodES256)
	p.AddKey("ed-1", jwt.SigningMethodEdDSA)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

// URL is the JWKS address to configure as CALLSIG_JWKS_URL.
func (p *IdentityProvider) URL() string { return p.srv.URL + "/.well-known/jwks.json" }

// AddKey generates a key for method (RS256, ES256 or EdDSA; PS256 and
// ES384 for keys callsig must refuse) and publishes it under kid.
func (p *IdentityProvider) AddKey(kid string, method jwt.SigningMethod) {
	p.addKey(kid, idpKey{method: method, private: p.generate(method, 2048)})
}

// AddBareKey publishes a key like AddKey, without "alg" in its JWK.
func (p *IdentityProvider) AddBareKey(kid string, method jwt.SigningMethod) {
	p.addKey(kid, idpKey{method: method, private: p.generate(method, 2048), bareJWK: true})
}

// AddEncryptionKey publishes a key like AddKey, marked "use": "enc": a
// key for encryption, which must never verify a signature.
func (p *IdentityProvider) AddEncryptionKey(kid string, method jwt.SigningMethod) {
	p.addKey(kid, idpKey{method: method, private: p.generate(method, 2048), encryption: true})
}

// AddWeakRSAKey publishes a 1024-bit RSA key for RS256, which callsig
// must refuse whatever the signature says.
func (p *IdentityProvider) AddWeakRSAKey(kid string) {
	p.addKey(kid, idpKey{method: jwt.SigningMethodRS256, private: p.generate(jwt.SigningMethodRS256, 1024)})
}

func (p *IdentityProvider) addKey(kid string, k idpKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.keys[kid]; !ok {
		p.order = append(p.order, kid)
	}
	p.keys[kid] = k
}

func (p *IdentityProvider) generate(method jwt.SigningMethod, rsaBits int) crypto.Signer {
	p.t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch method.Alg() {
	case "RS256", "PS256":
		key, err = rsa.GenerateKey(rand.Reader, rsaBits)
	case "ES256":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "EdDSA":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("no key type for %s", method.Alg())
	}
	if err != nil {
		p.t.Fatalf("identity provider: generate key: %v", err)
	}
	return key
}

// PublicKey returns the public key published under kid.
func (p *IdentityProvider) PublicKey(kid string) crypto.PublicKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[kid].private.Public()
}

// PrivateKey returns the signing key published under kid.
func (p *IdentityProvider) PrivateKey(kid string) crypto.Signer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.keys[kid].private
}

// IdentityProviderAudience is the aud of the provider's tokens, which a
// server trusting it must be configured with (CALLSIG_JWT_AUDIENCE): a
// provider's keys sign other apps' tokens too.
const IdentityProviderAudience = "callsig"

// Token signs claims with the key kid names, in that key's algorithm and
// with kid in the header. sub, aud (IdentityProviderAudience) and exp (one
// hour) are added unless claims has them; a nil value removes a claim.
func (p *IdentityProvider) Token(kid string, claims jwt.MapClaims) string {
	p.t.Helper()
	p.mu.Lock()
	k, ok := p.keys[kid]
	p.mu.Unlock()
	if !ok {
		p.t.Fatalf("identity provider: no key %q", kid)
	}
	return p.Sign(k.method, k.private, kid, claims)
}

// Sign signs claims (completed as in Token) with any method and key, and
// kid in the header ("" leaves it out): for forgeries.
func (p *IdentityProvider) Sign(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	p.t.Helper()
	c := jwt.MapClaims{"sub": "alice", "aud": IdentityProviderAudience, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for name, v := range claims {
		if v == nil {
			delete(c, name)
		} else {
			c[name] = v
		}
	}
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		p.t.Fatalf("identity provider: sign: %v", err)
	}
	return s
}

// Hits is how many requests the JWKS endpoint got, down or up.
func (p *IdentityProvider) Hits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits
}

// Down makes the provider drop every request unanswered; Up ends that.
func (p *IdentityProvider) Down() { p.mu.Lock(); p.down = true; p.mu.Unlock() }

// Up makes the provider answer again.
func (p *IdentityProvider) Up() { p.mu.Lock(); p.down = false; p.mu.Unlock() }

func (p *IdentityProvider) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.hits++
	down := p.down
	var set jwkset.JWKSMarshal
	for _, kid := range p.order {
		k := p.keys[kid]
		meta := jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}
		if !k.bareJWK {
			meta.ALG = jwkset.ALG(k.method.Alg())
		}
		if k.encryption {
			meta.USE = jwkset.UseEnc
		}
		jwk, err := jwkset.NewJWKFromKey(k.private.Public(), jwkset.JWKOptions{Metadata: meta})
		if err != nil {
			p.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			p.t.Errorf("identity provider: JWK %s: %v", kid, err)
			return
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	p.mu.Unlock()
	if down {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(set)
}
