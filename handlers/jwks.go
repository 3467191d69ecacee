package handlers

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"callsig/internal/redact"
)

// JWKS verifies tokens signed by the app's identity provider (Keycloak,
// Auth0, Firebase…) with the keys it publishes as a JSON Web Key Set.
// Fetching, parsing, caching, the kid lookup and the rate-limited refresh
// on an unknown kid are keyfunc's and jwkset's; JWKS adds what they leave
// to the caller: a lifecycle the app owns (Run), a server that starts even
// when the provider is down, and algorithms pinned per key type.
//
// The library's own refresh goroutine is not used: it cannot be waited
// for on shutdown, and its first fetch blocks construction (startup would
// hang on a provider that does not answer). Run fetches instead, and swaps
// in a fresh key set only when a fetch succeeds, so keys already cached
// keep working while the provider is down.
type JWKS struct {
	url string
	// logURL is url as logged: its password, if any, replaced (a
	// provider's key set behind basic authentication).
	logURL string
	log    *slog.Logger
	http   *http.Client
	// unknownKID limits the fetches caused by tokens naming a kid not in
	// the cached set, so a flood of made-up kids costs the provider one
	// request per period.
	unknownKID *rate.Limiter
	// learning is closed when the fetch for an unknown kid in flight
	// ends; nil while none is. Tokens naming a kid the cache lacks wait
	// for that fetch rather than each asking the limiter, which would
	// refuse all but the first while the provider's new key is on its way.
	mu           sync.Mutex
	learning     chan struct{}
	refreshEvery time.Duration
	retryMin     time.Duration
	retryMax     time.Duration
	current      atomic.Pointer[jwksKeys] // nil until the first fetch succeeds
}

// JWKSOptions configure a JWKS. Zero durations take the defaults.
type JWKSOptions struct {
	URL    string       // the provider's JWKS address (required)
	Logger *slog.Logger // nil discards
	// RefreshEvery is how often the key set is fetched again, to see keys
	// added and revoked (default 5 min): a key the provider removed is
	// trusted until then (plus a minute of the token cache), so this is
	// the revocation delay. keyfunc's hour was too long for that, and a
	// few KiB per node every few minutes cost the provider nothing.
	RefreshEvery time.Duration
	// UnknownKIDEvery is the least time between two fetches caused by a
	// token with an unknown kid (default 30 s).
	UnknownKIDEvery time.Duration
	// RetryMin and RetryMax bound the backoff after a failed fetch
	// (defaults 1 s and 1 min): while no key was ever fetched, tokens
	// signed by the provider are refused, so the first fetch is retried
	// soon.
	RetryMin, RetryMax time.Duration
}

// jwksFetchTimeout bounds one fetch of the key set, and a request's wait
// for the unknown-kid rate limiter: a request naming an unknown kid waits
// for a slot only when the limiter allows one within this long (and is
// refused at once otherwise), then for the fetch, which has the whole
// bound of its own.
const jwksFetchTimeout = 5 * time.Second

// jwksMaxBytes bounds the key set document: a few keys take a few KiB.
const jwksMaxBytes = 1 << 20

// jwksKeys is one fetched key set.
type jwksKeys struct {
	storage jwkset.Storage
	keyfunc keyfunc.Keyfunc
	began   time.Time // when its fetch began
}

// Errors of tokens verified with the provider's keys; their messages are
// safe to show the client.
var (
	errJWKSUnavailable = errors.New("the identity provider's signing keys are not available yet")
	errNoKID           = errors.New("token has no kid header")
	errUnknownKID      = errors.New("token kid is not in the identity provider's key set")
	errKeyMismatch     = errors.New("token kid names no signing key for its alg")
)

// NewJWKS prepares a key set for o.URL; nothing is fetched until Run.
func NewJWKS(o JWKSOptions) (*JWKS, error) {
	if o.URL == "" {
		return nil, errors.New("jwks: URL is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.RefreshEvery, 5*time.Minute)
	def(&o.UnknownKIDEvery, 30*time.Second)
	def(&o.RetryMin, time.Second)
	def(&o.RetryMax, time.Minute)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &JWKS{
		url:          o.URL,
		logURL:       redact.Attr(o.URL),
		log:          o.Logger,
		http:         &http.Client{Transport: limitedBody{transport}, Timeout: jwksFetchTimeout},
		unknownKID:   rate.NewLimiter(rate.Every(o.UnknownKIDEvery), 1),
		refreshEvery: o.RefreshEvery,
		retryMin:     o.RetryMin,
		retryMax:     min(o.RetryMax, o.RefreshEvery),
	}, nil
}

// Run fetches the key set at once, again every RefreshEvery, and after a
// failure with backoff, until ctx is done. A failed fetch never fails Run:
// the provider being down is logged, HS256 tokens keep working, and
// provider-signed tokens are checked against the keys last fetched (or
// refused with 401 while there are none).
func (j *JWKS) Run(ctx context.Context) error {
	next, backoff := time.Duration(0), j.retryMin
	timer := time.NewTimer(next)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		n, err := j.fetch(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			j.log.Warn("identity provider key set not fetched; retrying", "url", j.logURL, "err", err,
				"retry_in", backoff, "cached_keys", j.current.Load() != nil)
			next, backoff = backoff, min(2*backoff, j.retryMax)
		default:
			j.log.Info("identity provider key set fetched", "url", j.logURL, "keys", n)
			next, backoff = j.refreshEvery, j.retryMin
		}
		timer.Reset(next)
	}
}

// fetch reads the key set and, when that succeeds, makes it the current
// one; it returns how many usable keys it holds.
func (j *JWKS) fetch(ctx context.Context) (int, error) {
	began := time.Now()
	storage, err := jwkset.NewStorageFromHTTP(j.url, jwkset.HTTPClientStorageOptions{
		Client:      j.http,
		Ctx:         ctx,
		HTTPTimeout: jwksFetchTimeout,
	})
	if err != nil {
		return 0, err
	}
	// No RefreshUnknownKID: jwkset would wait for the limiter and fetch
	// under one deadline (a request that waited 4.5 s left the fetch
	// 0.5 s) and refuse every token but the first while that fetch is in
	// flight. learn does both.
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{j.url: storage},
	})
	if err != nil {
		return 0, err
	}
	// Keys marked for encryption ("use": "enc") never verify a signature.
	kf, err := keyfunc.New(keyfunc.Options{Storage: client, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		return 0, err
	}
	keys, err := storage.KeyReadAll(ctx)
	if err != nil {
		return 0, err
	}
	// Only over an older fetch's keys: a slow periodic fetch that began
	// before the provider rotated must not undo what a fetch for the new
	// kid (learn) stored meanwhile.
	next := &jwksKeys{storage: client, keyfunc: kf, began: began}
	for {
		cur := j.current.Load()
		if cur != nil && cur.began.After(began) {
			break
		}
		if j.current.CompareAndSwap(cur, next) {
			break
		}
	}
	return len(keys), nil
}

// jwksMethods are the algorithms accepted for provider-signed tokens, each
// pinned to one key type by keyFits.
var jwksMethods = []string{"RS256", "ES256", "EdDSA"}

// key returns the public key for a provider-signed token: the one its kid
// names (fetching the set again, at the limited rate, for a kid not seen
// yet), provided its type is the one the token's alg is pinned to.
func (j *JWKS) key(ctx context.Context, t *jwt.Token) (any, error) {
	ks := j.current.Load()
	if ks == nil {
		return nil, errJWKSUnavailable
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errNoKID
	}
	// Read first on its own so "unknown kid" (including a refresh refused
	// by the rate limiter or failed) is told apart from a key that does
	// not fit; the keyfunc's own read below then hits the cache.
	if _, err := ks.storage.KeyRead(ctx, kid); err != nil {
		if !j.learn(ctx) {
			return nil, errUnknownKID
		}
		if ks = j.current.Load(); ks == nil {
			return nil, errUnknownKID
		}
		if _, err := ks.storage.KeyRead(ctx, kid); err != nil {
			return nil, errUnknownKID
		}
	}
	key, err := ks.keyfunc.KeyfuncCtx(ctx)(t)
	if err != nil || !keyFits(t.Method.Alg(), key) {
		return nil, errKeyMismatch
	}
	return key, nil
}

// learn fetches the key set again for a token whose kid the cached set
// lacks, and reports whether a fetch ended meanwhile (its keys then
// current). A token arriving while such a fetch is in flight waits for it
// instead of asking the limiter again; the first one waits for the
// limiter's next slot only when it comes within jwksFetchTimeout. The
// fetch runs on the request's goroutine but not on its context, with a
// whole jwksFetchTimeout: it serves every token waiting, so a client that
// hangs up at once must not cancel it (the slot would be spent and the
// provider's newly published key left unlearnt until the next one).
func (j *JWKS) learn(ctx context.Context) bool {
	j.mu.Lock()
	if done := j.learning; done != nil {
		j.mu.Unlock()
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return false
		case <-time.After(2 * jwksFetchTimeout):
			return false
		}
	}
	r := j.unknownKID.Reserve()
	if delay := r.Delay(); delay > jwksFetchTimeout {
		r.Cancel()
		j.mu.Unlock()
		return false
	}
	done := make(chan struct{})
	j.learning = done
	j.mu.Unlock()
	defer func() {
		j.mu.Lock()
		j.learning = nil
		j.mu.Unlock()
		close(done)
	}()
	if delay := r.Delay(); delay > 0 {
		time.Sleep(delay)
	}
	fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	if _, err := j.fetch(fetchCtx); err != nil {
		j.log.Warn("identity provider key set not refreshed for an unknown kid", "url", j.logURL, "err", err)
		return false
	}
	return true
}

// keyFits pins each algorithm to its key type, so a token cannot pick how
// a key is used: RS256 needs an RSA key of at least 2048 bits, ES256 a
// P-256 key, EdDSA an Ed25519 key. The JWK's own alg, when present, was
// already matched by keyfunc.
func keyFits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == "RS256" && k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == "EdDSA" && len(k) == ed25519.PublicKeySize
	}
	return false
}

// limitedBody caps the key set document a provider may send.
type limitedBody struct{ next http.RoundTripper }

func (l limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := l.next.RoundTrip(r)
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	res.Body = http.MaxBytesReader(nil, res.Body, jwksMaxBytes)
	return res, nil
}
