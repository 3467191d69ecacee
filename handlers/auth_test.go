package handlers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"callsig/internal/wait"
)

// whoAmI answers 200 with the authenticated user, device and admin flag.
var whoAmI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	info := infoFrom(r.Context())
	admin := ""
	if info.admin {
		admin = " admin"
	}
	_, _ = w.Write([]byte(info.user + " " + info.device + admin))
})

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRequireUser(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// An RS256 header over an HMAC signature made with the secret: the
	// classic key-confusion forgery.
	confused := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": exp})
		tok.Header["alg"] = "RS256"
		s, err := tok.SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	none := signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp})

	tests := []struct {
		name     string
		cfg      AuthConfig
		header   string
		query    string
		device   string
		want     int
		wantBody string
	}{
		{name: "valid", header: "Bearer " + token(t, "alice", nil), want: 200, wantBody: "alice default"},
		{name: "scheme is case-insensitive", header: "bearer " + token(t, "alice", nil), want: 200},
		{name: "device header", header: "Bearer " + token(t, "alice", nil), device: "phone-1", want: 200, wantBody: "alice phone-1"},
		{name: "bad device", header: "Bearer " + token(t, "alice", nil), device: "bad device", want: 400},
		{name: "missing", want: 401, wantBody: "missing bearer token"},
		{name: "basic scheme", header: "Basic YWxpY2U6eA==", want: 401},
		{name: "garbage", header: "Bearer not.a.jwt", want: 401},
		{name: "expired", header: "Bearer " + token(t, "alice", jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}), want: 401, wantBody: "token is expired"},
		{name: "missing exp", header: "Bearer " + token(t, "alice", jwt.MapClaims{"exp": nil}), want: 401, wantBody: "token has no exp claim"},
		{name: "iat in the future", header: "Bearer " + token(t, "alice", jwt.MapClaims{"iat": time.Now().Add(time.Hour).Unix()}), want: 401, wantBody: "token iat is in the future"},
		{name: "iat within clock skew", header: "Bearer " + token(t, "alice", jwt.MapClaims{"iat": time.Now().Add(2 * time.Second).Unix()}), want: 200},
		{name: "iat in the past", header: "Bearer " + token(t, "alice", jwt.MapClaims{"iat": time.Now().Add(-time.Hour).Unix()}), want: 200},
		{name: "exp just passed (no leeway)", header: "Bearer " + token(t, "alice", jwt.MapClaims{"exp": time.Now().Add(-time.Second).Unix()}), want: 401, wantBody: "token is expired"},
		{name: "nbf within clock skew", header: "Bearer " + token(t, "alice", jwt.MapClaims{"nbf": time.Now().Add(2 * time.Second).Unix()}), want: 200},
		{name: "nbf in the future", header: "Bearer " + token(t, "alice", jwt.MapClaims{"nbf": time.Now().Add(time.Minute).Unix()}), want: 401, wantBody: "not valid yet"},
		{name: "Exp beside an expired exp", header: "Bearer " + token(t, "alice", jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix(), "Exp": strconv.FormatInt(exp, 10)}), want: 401, wantBody: "another case"},
		{name: "NBF far ahead", header: "Bearer " + token(t, "alice", jwt.MapClaims{"NBF": 1e300}), want: 401, wantBody: "another case"},
		{name: "Role admin", header: "Bearer " + token(t, "alice", jwt.MapClaims{"Role": "admin"}), want: 401, wantBody: "another case"},
		{name: "AUD beside another app's aud", cfg: AuthConfig{Audience: "api"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"aud": "web", "AUD": "api"}), want: 401},
		{name: "exp as a string", header: "Bearer " + token(t, "alice", jwt.MapClaims{"exp": strconv.FormatInt(exp, 10)}), want: 401, wantBody: "must be JSON numbers"},
		{name: "iat as a string", header: "Bearer " + token(t, "alice", jwt.MapClaims{"iat": strconv.FormatInt(time.Now().Unix(), 10)}), want: 401, wantBody: "must be JSON numbers"},
		{name: "nbf as a string", header: "Bearer " + token(t, "alice", jwt.MapClaims{"nbf": "0"}), want: 401, wantBody: "must be JSON numbers"},
		{name: "alg none", header: "Bearer " + none, want: 401},
		{name: "HS384", header: "Bearer " + signed(t, jwt.SigningMethodHS384, testSecret, jwt.MapClaims{"sub": "alice", "exp": exp}), want: 401},
		{name: "RS256", header: "Bearer " + signed(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "alice", "exp": exp}), want: 401},
		{name: "RS256 header, HMAC signature", header: "Bearer " + confused, want: 401},
		{name: "wrong secret", header: "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("other"), jwt.MapClaims{"sub": "alice", "exp": exp}), want: 401, wantBody: "signature"},
		{name: "bad sub", header: "Bearer " + token(t, "alice bob", nil), want: 401, wantBody: "sub"},
		{name: "empty sub", header: "Bearer " + token(t, "", nil), want: 401},
		{name: "long sub", header: "Bearer " + token(t, strings.Repeat("a", 129), nil), want: 401},
		{name: "issuer required", cfg: AuthConfig{Issuer: "callsig"}, header: "Bearer " + token(t, "alice", nil), want: 401, wantBody: "token has no iss claim"},
		{name: "issuer wrong", cfg: AuthConfig{Issuer: "callsig"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"iss": "evil"}), want: 401},
		{name: "issuer ok", cfg: AuthConfig{Issuer: "callsig"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"iss": "callsig"}), want: 200},
		{name: "audience wrong", cfg: AuthConfig{Audience: "api"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"aud": "web"}), want: 401, wantBody: "audience"},
		{name: "audience ok", cfg: AuthConfig{Audience: "api"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"aud": []string{"web", "api"}}), want: 200},
		{name: "user claim", cfg: AuthConfig{UserClaim: "uid"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"uid": "carol"}), want: 200, wantBody: "carol default"},
		{name: "user claim missing", cfg: AuthConfig{UserClaim: "uid"}, header: "Bearer " + token(t, "alice", nil), want: 401, wantBody: "token has no uid claim"},
		{name: "user claim null", cfg: AuthConfig{UserClaim: "uid"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"uid": nil}), want: 401, wantBody: "token has no uid claim"},
		{name: "user claim not a string", cfg: AuthConfig{UserClaim: "uid"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"uid": 42}), want: 401, wantBody: "token uid is not a valid user ID"},
		{name: "user claim invalid", cfg: AuthConfig{UserClaim: "email"}, header: "Bearer " + token(t, "alice", jwt.MapClaims{"email": "a b@example.com"}), want: 401, wantBody: "token email is not a valid user ID"},
		{name: "query token refused on REST", query: "?access_token=" + token(t, "alice", nil), want: 401},
		// A forged token's claims are never decoded: its signature is
		// checked first. Decoded, this one's string exp would be refused
		// for that, after the work of decoding a large payload.
		{name: "forged, claims not read", header: "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("other"),
			jwt.MapClaims{"sub": "alice", "exp": "soon", "pad": strings.Repeat("x", 8<<10)}), want: 401, wantBody: "token signature is invalid"},
		{name: "longer than 16 KiB", header: "Bearer " + token(t, "alice", jwt.MapClaims{"pad": strings.Repeat("x", 16<<10)}), want: 401, wantBody: "longer than 16 KiB"},
		{name: "a large valid token", header: "Bearer " + token(t, "alice", jwt.MapClaims{"pad": strings.Repeat("x", 8<<10)}), want: 200, wantBody: "alice default"},
		// A large header (an x5c certificate chain) is no reason to refuse.
		{name: "a large valid header", header: "Bearer " + func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": exp})
			tok.Header["x5c"] = []string{strings.Repeat("A", 2<<10)}
			s, err := tok.SignedString(testSecret)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}(), want: 200, wantBody: "alice default"},
		{name: "undecodable signature", header: "Bearer " + token(t, "alice", nil) + "!", want: 401, wantBody: "token is invalid"},
		// RFC 7515 4.1.11: an extension the server does not know of,
		// marked critical, makes the token one it must refuse.
		{name: "crit header", header: "Bearer " + func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": exp})
			tok.Header["crit"] = []string{"x-bound"}
			tok.Header["x-bound"] = "device-1"
			s, err := tok.SignedString(testSecret)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}(), want: 401, wantBody: "crit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Secret = testSecret
			h := newAuthenticator(tt.cfg).requireUser(false)(whoAmI)
			r := httptest.NewRequest("GET", "/calls"+tt.query, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if tt.device != "" {
				r.Header.Set("X-Device-ID", tt.device)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Fatalf("got %d %s, want %d containing %q", w.Code, w.Body, tt.want, tt.wantBody)
			}
			if tt.want == 401 {
				decodeProblem(t, w, 401, "unauthorized")
				if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
				}
			}
		})
	}
}

// Time claims outside years 1–9999 are refused, whichever key signed the
// token: jwt would wrap an nbf or iat too large for int64 seconds around to
// the far past, where it passes.
func TestTimeClaimsOutOfRange(t *testing.T) {
	j, providerKey := testProvider(t)
	a := newAuthenticator(AuthConfig{Secret: testSecret, JWKS: j})
	hourAgo, inHour := time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Hour).Unix()
	const (
		notYet    = "token is not valid yet"
		iatFuture = "token iat is in the future"
		outside   = "token exp, iat and nbf must lie between years 1 and 9999"
	)
	tests := []struct {
		name   string
		claims jwt.MapClaims // over sub=alice, exp in an hour
		want   string        // the error, "" for accepted
	}{
		{"nbf an hour ago", jwt.MapClaims{"nbf": hourAgo}, ""},
		{"nbf in an hour", jwt.MapClaims{"nbf": inHour}, notYet},
		{"nbf at the end of year 9999", jwt.MapClaims{"nbf": maxNumericDate}, notYet},
		{"nbf in year 10000", jwt.MapClaims{"nbf": maxNumericDate + 1}, notYet},
		{"nbf 9.3e18", jwt.MapClaims{"nbf": 9.3e18}, notYet},
		{"nbf 1e19", jwt.MapClaims{"nbf": 1e19}, notYet},
		{"nbf max int64", jwt.MapClaims{"nbf": int64(math.MaxInt64)}, notYet},
		{"nbf 1e300", jwt.MapClaims{"nbf": 1e300}, notYet},
		{"nbf -1e300", jwt.MapClaims{"nbf": -1e300}, outside},
		{"nbf at the start of year 1", jwt.MapClaims{"nbf": minNumericDate}, ""},
		{"nbf before year 1", jwt.MapClaims{"nbf": minNumericDate - 1}, outside},
		{"iat an hour ago", jwt.MapClaims{"iat": hourAgo}, ""},
		{"iat in year 10000", jwt.MapClaims{"iat": maxNumericDate + 1}, iatFuture},
		{"iat 9.3e18", jwt.MapClaims{"iat": 9.3e18}, iatFuture},
		{"iat max int64", jwt.MapClaims{"iat": int64(math.MaxInt64)}, iatFuture},
		{"iat 1e300", jwt.MapClaims{"iat": 1e300}, iatFuture},
		{"iat -1e300", jwt.MapClaims{"iat": -1e300}, outside},
		{"exp at the end of year 9999", jwt.MapClaims{"exp": maxNumericDate}, ""},
		{"exp in year 10000", jwt.MapClaims{"exp": maxNumericDate + 1}, outside},
		{"exp 9e18", jwt.MapClaims{"exp": 9e18}, outside},
		{"exp 1e300", jwt.MapClaims{"exp": 1e300}, outside},
		{"exp -1e300", jwt.MapClaims{"exp": -1e300}, outside},
		{"exp beyond float64", jwt.MapClaims{"exp": json.Number("1e400")}, "token is invalid"},
	}
	// The same claims, signed with callsig's secret and by the provider.
	signers := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"HS256", jwt.SigningMethodHS256, testSecret, ""},
		{"provider EdDSA", jwt.SigningMethodEdDSA, providerKey, "ed-1"},
	}
	for _, tt := range tests {
		claims := jwt.MapClaims{"sub": "alice", "exp": inHour}
		for k, v := range tt.claims {
			claims[k] = v
		}
		for _, sg := range signers {
			t.Run(tt.name+"/"+sg.name, func(t *testing.T) {
				tok := jwt.NewWithClaims(sg.method, claims)
				if sg.kid != "" {
					tok.Header["kid"] = sg.kid
				}
				s, err := tok.SignedString(sg.key)
				if err != nil {
					t.Fatal(err)
				}
				user, _, _, err := a.verify(context.Background(), s)
				if tt.want == "" {
					if err != nil || user != "alice" {
						t.Fatalf("refused: %q %v", user, err)
					}
					return
				}
				if err == nil || err.Error() != tt.want {
					t.Fatalf("got %q %v, want %q", user, err, tt.want)
				}
			})
		}
	}
	// Over HTTP, a refusal is the usual 401 problem.
	h := a.requireUser(false)(whoAmI)
	r := httptest.NewRequest("GET", "/calls", nil)
	r.Header.Set("Authorization", "Bearer "+token(t, "alice", jwt.MapClaims{"nbf": 1e300}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if p := decodeProblem(t, w, 401, "unauthorized"); !strings.Contains(p.Detail, notYet) {
		t.Fatalf("detail %q", p.Detail)
	}
}

// ed25519KeySet makes an Ed25519 key and the JWKS document that publishes
// it as kid "ed-1", for signing.
func ed25519KeySet(t *testing.T) ([]byte, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jwkset.NewJWKFromKey(priv.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "ed-1", USE: jwkset.UseSig}})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	if err != nil {
		t.Fatal(err)
	}
	return doc, priv
}

// testProvider serves an identity provider's JWKS with one Ed25519 key,
// kid "ed-1", and returns the JWKS once it holds the key, with the key.
func testProvider(t *testing.T) (*JWKS, ed25519.PrivateKey) {
	t.Helper()
	doc, priv := ed25519KeySet(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	t.Cleanup(srv.Close)
	j, err := NewJWKS(JWKSOptions{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- j.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	wait.For(t, 10*time.Second, "the provider's keys", func() bool { return j.current.Load() != nil })
	return j, priv
}

func TestRequireUserFromQuery(t *testing.T) {
	h := newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(true)(whoAmI)
	r := httptest.NewRequest("GET", "/events?access_token="+token(t, "bob", nil)+"&deviceID=tab-2", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "bob tab-2" {
		t.Fatalf("got %d %q", w.Code, w.Body)
	}
	r = httptest.NewRequest("GET", "/events?access_token="+token(t, "bob", nil)+"&deviceID=", nil)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.String() != "bob default" {
		t.Fatalf("empty deviceID: got %d %q", w.Code, w.Body)
	}
}

func TestRequireAdmin(t *testing.T) {
	a := newAuthenticator(AuthConfig{Secret: testSecret, AdminToken: "admin-secret"})
	tests := []struct {
		name, header string
		want         int
	}{
		{"admin token", "Bearer admin-secret", 200},
		{"admin role", "Bearer " + token(t, "ops", jwt.MapClaims{"role": "admin"}), 200},
		{"user token", "Bearer " + token(t, "alice", nil), 403},
		{"other role", "Bearer " + token(t, "alice", jwt.MapClaims{"role": "user"}), 403},
		{"wrong admin token", "Bearer admin-secreT", 401},
		{"no token", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/webhooks", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			w := httptest.NewRecorder()
			a.requireAdmin(whoAmI).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("got %d %s, want %d", w.Code, w.Body, tt.want)
			}
		})
	}
	// Without a configured admin token, an empty-looking one never matches.
	noToken := newAuthenticator(AuthConfig{Secret: testSecret})
	r := httptest.NewRequest("GET", "/webhooks", nil)
	r.Header.Set("Authorization", "Bearer ")
	w := httptest.NewRecorder()
	noToken.requireAdmin(whoAmI).ServeHTTP(w, r)
	if w.Code != 401 {
		t.Fatalf("empty admin token: got %d", w.Code)
	}
}

// What MintToken mints, the authenticator accepts, with the same issuer,
// audience and role rules: the two live side by side so they cannot drift.
func TestMintTokenRoundTrip(t *testing.T) {
	cfg := AuthConfig{Secret: testSecret, Issuer: "callsig", Audience: "api"}
	a := newAuthenticator(cfg)
	for _, admin := range []bool{false, true} {
		tok, err := MintToken(testSecret, TokenRequest{UserID: "alice", TTL: time.Minute, Admin: admin, Issuer: "callsig", Audience: "api"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		user, isAdmin, _, err := a.parse(context.Background(), tok)
		if err != nil || user != "alice" || isAdmin != admin {
			t.Fatalf("parse(minted, admin=%v) = %q %v %v", admin, user, isAdmin, err)
		}
	}
	expired, err := MintToken(testSecret, TokenRequest{UserID: "alice", TTL: time.Minute, Issuer: "callsig", Audience: "api"}, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := a.parse(context.Background(), expired); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("parse(expired) err = %v", err)
	}
	// With CALLSIG_JWT_USER_CLAIM, minted tokens carry the user there too.
	uid := newAuthenticator(AuthConfig{Secret: testSecret, UserClaim: "uid"})
	tok, err := MintToken(testSecret, TokenRequest{UserID: "carol", TTL: time.Minute, UserClaim: "uid"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if user, _, _, err := uid.parse(context.Background(), tok); err != nil || user != "carol" {
		t.Fatalf("parse(minted with uid) = %q %v", user, err)
	}
}

// A verified token has one spelling: the same token with line breaks put
// in (which the base64 decoder skips; %0A in the query string of GET
// /events) or with its signature's last character carrying stray bits
// verified too, and each spelling was cached on its own, so one valid
// token could fill the verified-token cache with 1.6 GB.
func TestOneSpellingOfAToken(t *testing.T) {
	a := newAuthenticator(AuthConfig{Secret: testSecret})
	tok := token(t, "alice", nil)
	if _, _, _, err := a.parse(context.Background(), tok); err != nil {
		t.Fatalf("the token itself: %v", err)
	}
	dot := strings.LastIndex(tok, ".")
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	for name, spelling := range map[string]string{
		"line breaks in the signature":     tok[:dot+1] + "\n" + tok[dot+1:] + "\r\n",
		"a line break before it":           tok[:dot] + "\n" + tok[dot:],
		"stray bits in the last character": tok[:len(tok)-1] + string(alphabet[last|1]),
	} {
		if spelling == tok {
			t.Fatalf("%s: the spelling is the token", name)
		}
		if _, _, _, err := a.parse(context.Background(), spelling); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
	if n := len(a.cache.entries); n != 1 {
		t.Errorf("%d cached entries, want the one token", n)
	}
}

// An expired token the issuer signed is remembered: sent again it is
// refused without another signature check. It spends nothing of its
// address's failed logins, so nothing else bounds how often it may come.
func TestExpiredTokenIsCheckedOnce(t *testing.T) {
	a := newAuthenticator(AuthConfig{Secret: testSecret})
	tok := token(t, "alice", jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})
	for i := range 3 {
		_, _, _, err := a.verifyAndCache(context.Background(), tok)
		if !errors.Is(err, errTokenExpired) || !errors.As(err, new(signedRefusal)) {
			t.Fatalf("try %d: %v, want the issuer's token refused as expired", i, err)
		}
		// Checked again, the signature would now fail: the refusals after
		// the first come from the cache.
		a.cfg.Secret = []byte("another-secret-0123456789abcdef")
	}
	other := token(t, "bob", jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})
	if _, _, _, err := a.verifyAndCache(context.Background(), other); err == nil || errors.Is(err, errTokenExpired) {
		t.Fatalf("a token not seen before: %v, want its signature checked (and failed)", err)
	}
}
