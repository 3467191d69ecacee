package handlers

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/sse"
)

// AuthConfig says how requests are authenticated.
type AuthConfig struct {
	// Secret is the HS256 key (its raw bytes). Required.
	Secret []byte
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer   string
	Audience string
	// AdminToken, when set, is accepted as a bearer token on admin routes.
	AdminToken string
	// UserClaim names the claim holding the user ID, in every token;
	// empty means "sub".
	UserClaim string
	// JWKS, when set, also admits RS256, ES256 and EdDSA tokens signed by
	// the app's identity provider, under the same claim rules.
	JWKS *JWKS
}

// DefaultDevice is the device of a request that names none.
const DefaultDevice = "default"

// adminTokenUser identifies the admin token in logs, rate limits and
// idempotency scopes; '#' cannot occur in a user ID, so it never collides.
const adminTokenUser = "#admin"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.@:-]{1,128}$`)

// ValidID reports whether s is a valid user or device ID.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// tokenClaims are the claims callsig reads: the user claim (sub unless
// configured otherwise) is the user ID, role "admin" grants the admin
// endpoints.
type tokenClaims struct {
	jwt.RegisteredClaims
	Role string `json:"role,omitempty"`

	userClaim string // the claim to read into user, set before decoding
	user      string // its value, when a JSON string
	hasUser   bool   // whether the claim is present at all

	// seconds holds exp, iat and nbf as the token gives them, for the range
	// check of Validate: outside it jwt's NumericDate may have wrapped.
	seconds map[string]float64
}

// iatSkew is how far in the future a token's iat or nbf may lie: the
// clock of the machine that minted it may run a little ahead of ours (a
// provider that sets nbf to iat, as Azure AD does, was refused for 2 s of
// skew). exp gets none: a token is never taken after it.
const iatSkew = 5 * time.Second

// decodedClaims are the claims decoded into tokenClaims' fields: those jwt
// decodes into its RegisteredClaims, and role.
var decodedClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "role"}

// errClaimCase: a decoded claim's name in another case ("Exp", "Role"),
// which Go's JSON decoding takes for the claim itself, after the checks of
// the exact name: an expired token with "Exp" in the future passed, as did
// another app's token with "AUD" naming this one, and a backend that
// copies a user's own attributes into its tokens would have let "Role":
// "admin" grant the admin endpoints.
var errClaimCase = errors.New("token has a claim named as a registered one (or role) in another case")

// errCritical: a token whose header lists critical extensions (crit),
// which RFC 7515 says a recipient that does not understand them must
// refuse. callsig understands none: whatever such an extension restricts
// (the device a token is bound to, say) would be ignored.
var errCritical = errors.New("token has crit header parameters this server does not understand")

// errClaimNotNumber: exp, iat or nbf given as something other than a JSON
// number. RFC 7519 NumericDate is a number; jwt's decoder also takes
// "1767229200" (a string), which a careless issuer could produce.
var errClaimNotNumber = errors.New("token exp, iat and nbf must be JSON numbers")

// errIssuedInFuture: iat later than now (beyond iatSkew), a token from a
// clock gone wrong or a forger hoping to outlive exp checks elsewhere.
var errIssuedInFuture = errors.New("token iat is in the future")

// The time claims callsig accepts lie from year 1 to year 9999 (UTC), the
// years of RFC 3339. jwt turns a NumericDate's float64 into int64 seconds
// unchecked: 1e300 or 9.3e18 wraps around to the far past, so an nbf or iat
// that far ahead would pass as long gone. Nothing genuine lies outside.
const (
	minNumericDate = -62135596800 // 0001-01-01T00:00:00Z
	maxNumericDate = 253402300799 // 9999-12-31T23:59:59Z
)

// errNotValidYet: nbf past year 9999, as far in the future as it gets (jwt's
// own check catches nbf in range and is mapped to the same words).
var errNotValidYet = errors.New("token is not valid yet")

// errTimeOutOfRange: exp past year 9999, or any time claim before year 1.
var errTimeOutOfRange = errors.New("token exp, iat and nbf must lie between years 1 and 9999")

// UnmarshalJSON refuses time claims that are not JSON numbers, reads the
// user claim, then decodes the claims as usual.
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for name := range all {
		for _, r := range decodedClaims {
			if name != r && strings.EqualFold(name, r) {
				return errClaimCase
			}
		}
	}
	for _, name := range []string{"exp", "iat", "nbf"} {
		raw, ok := all[name]
		if !ok {
			continue
		}
		if ch := raw[0]; ch != '-' && (ch < '0' || ch > '9') {
			return errClaimNotNumber
		}
		// A number too large for float64 (1e400) is left to jwt's decoder,
		// which refuses it.
		if f, err := json.Number(raw).Float64(); err == nil {
			if c.seconds == nil {
				c.seconds = make(map[string]float64, 3)
			}
			c.seconds[name] = f
		}
	}
	if raw, ok := all[c.userClaim]; ok && string(raw) != "null" {
		c.hasUser = true
		_ = json.Unmarshal(raw, &c.user) // not a string: stays "", refused as invalid
	}
	type plain tokenClaims // without this method: no recursion
	return json.Unmarshal(b, (*plain)(c))
}

// Validate runs after jwt's own checks (jwt.ClaimsValidator), and like
// them only once the signature is verified: time claims outside years
// 1–9999 and a token issued in the future are refused.
func (c *tokenClaims) Validate() error {
	if c.seconds["nbf"] > maxNumericDate {
		return errNotValidYet
	}
	if c.seconds["iat"] > maxNumericDate {
		return errIssuedInFuture
	}
	for _, s := range c.seconds {
		if s < minNumericDate || s > maxNumericDate {
			return errTimeOutOfRange
		}
	}
	now := time.Now()
	if c.IssuedAt != nil && c.IssuedAt.After(now.Add(iatSkew)) {
		return errIssuedInFuture
	}
	// jwt's leeway (iatSkew, for nbf) applies to exp too: none for it.
	if c.ExpiresAt != nil && !now.Before(c.ExpiresAt.Time) {
		return jwt.ErrTokenExpired
	}
	return nil
}

type authenticator struct {
	cfg       AuthConfig
	parser    *jwt.Parser    // decodes a token whose signature checkSignature verified
	validator *jwt.Validator // then checks its claims, with the parser's options
	methods   []string       // the algorithms admitted
	cache     *tokenCache
	expired   *tokenCache  // tokens the issuer signed, refused as expired
	failures  *rateLimiter // failed logins per address (authfail.go); nil: not limited
}

// maxTokenLength bounds a token before any work is done on it. Real ones
// are well under it (an identity provider's with many groups reaches a few
// KiB); a fake one of nearly a MiB cost 71 ms of CPU to refuse.
const maxTokenLength = 16 << 10

// Verified tokens are remembered for a minute, at most 100,000 of them
// and 64 MiB of them (a 16 KiB token counts as such).
const (
	tokenCacheTTL   = time.Minute
	tokenCacheMax   = 100_000
	tokenCacheBytes = 64 << 20
)

func newAuthenticator(cfg AuthConfig) *authenticator {
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	// The algorithms are fixed here, never taken from the token alone:
	// this refuses "none", and HS256 only ever verifies with the secret
	// while the provider's algorithms only ever verify with a provider key
	// of the type each is pinned to (keyFits), which defeats key-confusion
	// attacks (an HS256 MAC made with a public key, an RS256 header on an
	// EC key). Without a JWKS, only HS256.
	methods := []string{"HS256"}
	if cfg.JWKS != nil {
		methods = append(methods, jwksMethods...)
	}
	// Strict decoding refuses a segment whose last character carries
	// bits past the data: otherwise one token had 16 spellings, each
	// verified and cached on its own (see tokenCharsOK).
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithStrictDecoding(), jwt.WithLeeway(iatSkew)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	return &authenticator{cfg: cfg, parser: jwt.NewParser(opts...), validator: jwt.NewValidator(opts...), methods: methods,
		cache:   newTokenCache(tokenCacheTTL, tokenCacheMax, tokenCacheBytes),
		expired: newTokenCache(tokenCacheTTL, tokenCacheMax, tokenCacheBytes)}
}

// keyFor picks the verification key: the secret for HS256, the provider's
// key named by kid for the others (which the parser admits only when a
// JWKS is configured).
func (a *authenticator) keyFor(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		if t.Method == jwt.SigningMethodHS256 {
			return a.cfg.Secret, nil
		}
		if a.cfg.JWKS == nil {
			return nil, errKeyMismatch
		}
		return a.cfg.JWKS.key(ctx, t)
	}
}

// parse verifies a JWT and returns its user, whether it carries the admin
// role and its exp (which an event stream must not outlive). Error messages
// are safe to show the client. A token verified lately is taken from the
// cache (see tokenCache).
func (a *authenticator) parse(ctx context.Context, token string) (user string, admin bool, exp time.Time, err error) {
	if v, ok := a.recent(token); ok {
		return v.user, v.admin, v.exp, nil
	}
	return a.verifyAndCache(ctx, token)
}

// recent returns token's claims when it was verified lately (the cache).
// A token longer than any verified one is not looked up: hashing a
// megabyte of query string for the lookup was work for nothing, done even
// for an address whose failed logins are used up.
func (a *authenticator) recent(token string) (verifiedToken, bool) {
	if len(token) > maxTokenLength {
		return verifiedToken{}, false
	}
	return a.cache.get(token, time.Now())
}

// verifyAndCache is parse after a cache miss. A token the issuer signed
// that has expired is remembered too (it stays expired): it is not a
// failed login (signedRefusal), so its address's share does not bound how
// often it is sent, and a client repeating one would otherwise cost a
// signature check (tens of µs for RS256) each time.
func (a *authenticator) verifyAndCache(ctx context.Context, token string) (user string, admin bool, exp time.Time, err error) {
	now := time.Now()
	if _, ok := a.expired.get(token, now); ok {
		return "", false, time.Time{}, signedRefusal{errTokenExpired}
	}
	user, admin, exp, err = a.verify(ctx, token)
	switch {
	case err == nil:
		a.cache.put(token, verifiedToken{user: user, admin: admin, exp: exp}, now)
	case errors.Is(err, errTokenExpired) && len(token) <= maxTokenLength:
		a.expired.put(token, verifiedToken{exp: neverExpires}, now)
	}
	return user, admin, exp, err
}

// errTokenExpired is verify's refusal of a token past its exp.
var errTokenExpired = errors.New("token is expired")

// neverExpires is the exp of the expired-token cache's entries, which
// end with their time in the cache alone.
var neverExpires = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// verify is parse without the cache.
func (a *authenticator) verify(ctx context.Context, token string) (user string, admin bool, exp time.Time, err error) {
	if len(token) > maxTokenLength {
		return "", false, time.Time{}, errors.New("token is longer than 16 KiB")
	}
	if !tokenCharsOK(token) {
		return "", false, time.Time{}, errors.New("token is invalid: a JWT has only base64url characters and dots")
	}
	c := tokenClaims{userClaim: a.cfg.UserClaim}
	method, err := a.checkSignature(ctx, token)
	if err == nil {
		// From here on a refusal is the issuer's token's (signedRefusal).
		defer func() {
			if err != nil {
				err = signedRefusal{err}
			}
		}()
		// Verified: the claims are decoded, once, and checked as jwt's
		// ParseWithClaims would (our Validate included).
		if _, _, err = a.parser.ParseUnverified(token, &c); err == nil {
			if verr := a.validator.Validate(&c); verr != nil {
				err = fmt.Errorf("%w: %w", jwt.ErrTokenInvalidClaims, verr)
			}
		}
	}
	switch {
	case err == nil:
	case isOurs(err):
		return "", false, time.Time{}, unwrapOurs(err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", false, time.Time{}, errTokenExpired
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "", false, time.Time{}, errors.New("token has no " + missingClaim(err) + " claim")
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "", false, time.Time{}, errors.New("token is not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "", false, time.Time{}, errors.New("token has the wrong issuer")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "", false, time.Time{}, errors.New("token has the wrong audience")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "", false, time.Time{}, errors.New("token signature is invalid")
	default:
		return "", false, time.Time{}, errors.New("token is invalid")
	}
	if !c.hasUser {
		return "", false, time.Time{}, errors.New("token has no " + a.cfg.UserClaim + " claim")
	}
	if !ValidID(c.user) {
		return "", false, time.Time{}, errors.New("token " + a.cfg.UserClaim + " is not a valid user ID")
	}
	// Only tokens signed with callsig's own secret grant the admin role: an
	// identity provider's "role" claim is the app's business (its own
	// admins), not a licence to read every call's webhooks.
	admin = c.Role == "admin" && method == jwt.SigningMethodHS256
	return c.user, admin, c.ExpiresAt.Time, nil
}

// checkSignature verifies token's signature from its header alone, before
// its claims are decoded: jwt's ParseWithClaims decodes them first (and
// tokenClaims twice), so a forged token with a large payload cost the
// server far more than its sender, with no rate limit (one comes after
// authentication). It returns the token's signing method. Its errors are
// jwt's own kinds, or the key lookup's, so verify words them as jwt's
// parser would have.
func (a *authenticator) checkSignature(ctx context.Context, token string) (jwt.SigningMethod, error) {
	head, rest, ok := strings.Cut(token, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return nil, jwt.ErrTokenMalformed
	}
	// Every segment is decoded before the key is looked up, as jwt does,
	// so a malformed token is told so whatever its kid; the claims are
	// only decoded from base64 (cheap), not read as JSON.
	raw, err := a.parser.DecodeSegment(head)
	if err != nil {
		return nil, jwt.ErrTokenMalformed
	}
	signature, err := a.parser.DecodeSegment(sig)
	if err != nil {
		return nil, jwt.ErrTokenMalformed
	}
	if _, err := a.parser.DecodeSegment(payload); err != nil {
		return nil, jwt.ErrTokenMalformed
	}
	header := map[string]any{}
	if err := json.Unmarshal(raw, &header); err != nil {
		return nil, jwt.ErrTokenMalformed
	}
	if _, ok := header["crit"]; ok {
		return nil, errCritical
	}
	alg, _ := header["alg"].(string)
	method := jwt.GetSigningMethod(alg)
	if method == nil || !slices.Contains(a.methods, alg) {
		return nil, jwt.ErrTokenSignatureInvalid
	}
	key, err := a.keyFor(ctx)(&jwt.Token{Header: header, Method: method})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jwt.ErrTokenUnverifiable, err)
	}
	if err := method.Verify(head+"."+payload, signature, key); err != nil {
		return nil, jwt.ErrTokenSignatureInvalid
	}
	return method, nil
}

// tokenCharsOK reports whether token has only the characters of a JWT's
// compact form (base64url segments and dots). The base64 decoder skips
// line breaks, so a token with line breaks put in (%0A in the query string
// of GET /events) verified as the same token, and each spelling was
// cached on its own: one valid token filled the cache with 1.6 GB.
func tokenCharsOK(token string) bool {
	for i := range len(token) {
		switch c := token[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// ourTokenErrors are the token errors of ours, with messages for the
// client, that jwt wraps in its own words.
var ourTokenErrors = []error{errClaimNotNumber, errClaimCase, errCritical, errIssuedInFuture, errNotValidYet, errTimeOutOfRange, errJWKSUnavailable, errNoKID, errUnknownKID, errKeyMismatch}

func isOurs(err error) bool {
	for _, e := range ourTokenErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// unwrapOurs returns the error of ours that err wraps, or err.
func unwrapOurs(err error) error {
	for _, e := range ourTokenErrors {
		if errors.Is(err, e) {
			return e
		}
	}
	return err
}

// missingClaim names the claim of jwt's "<claim> claim is required" error.
func missingClaim(err error) string {
	msg, _, ok := strings.Cut(err.Error(), " claim is required")
	if !ok {
		return "required"
	}
	return msg[strings.LastIndex(msg, " ")+1:]
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// unauthorized answers 401 with the challenge RFC 6750 asks for.
func unauthorized(w http.ResponseWriter, r *http.Request, reason string, tokenGiven bool) {
	challenge := `Bearer realm="callsig"`
	if tokenGiven {
		challenge += `, error="invalid_token", error_description="` + reason + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, r, newError(codeUnauthorized, "%s", reason))
}

// refuseToken answers a token verifyAndCache refused. Keys not fetched
// yet (the identity provider down since the server started) are the
// server's failure, not the token's: 503 with Retry-After, an event
// stream an empty one whose retry is that wait (EventSource gives up on a
// 503), and not a 401, which tells a client its token is bad (the
// JavaScript client asks the app for another).
func refuseToken(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, errJWKSUnavailable) {
		unauthorized(w, r, err.Error(), true)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == eventsRoute {
		sse.Refuse(w, r, keysUnavailableRetry, err.Error()+"; reconnect later")
		return
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(keysUnavailableRetry/time.Second)))
	writeError(w, r, newError(codeUnavailable, "%s; retry later", err))
}

// keysUnavailableRetry is how long a client is asked to wait while the
// identity provider's keys have never been fetched (a failed fetch is
// retried after 1 s, backing off to a minute: see JWKS).
const keysUnavailableRetry = 5 * time.Second

// notAGuess reports whether a token verifyAndCache answered with err
// spends nothing of its address's failed logins: it verified, or its
// signature did (signedRefusal), or it could not be checked at all.
func notAGuess(err error) bool {
	return err == nil || errors.As(err, new(signedRefusal)) || errors.Is(err, errJWKSUnavailable)
}

// verifyReserved verifies a token not in the cache, for which
// reserveFailure took one of r's address's failed logins: given back
// unless the token was a guess (notAGuess). A refused token is answered
// here (refuseToken), and ok is false.
func (a *authenticator) verifyReserved(w http.ResponseWriter, r *http.Request, token string) (user string, admin bool, exp time.Time, ok bool) {
	user, admin, exp, err := a.verifyAndCache(r.Context(), token)
	if notAGuess(err) {
		a.spare(r)
	}
	if err != nil {
		refuseToken(w, r, err)
		return "", false, time.Time{}, false
	}
	return user, admin, exp, true
}

// requireUser authenticates a user by bearer JWT (or, with fromQuery, by
// ?access_token=, which EventSource needs) and names the device: from
// X-Device-ID, or from ?deviceID= with fromQuery; missing means "default".
func (a *authenticator) requireUser(fromQuery bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token := bearer(r)
			device := r.Header.Get("X-Device-ID")
			deviceField := "X-Device-ID"
			if fromQuery {
				q := r.URL.Query()
				if token == "" {
					token = q.Get("access_token")
				}
				if q.Has("deviceID") {
					device, deviceField = q.Get("deviceID"), "deviceID"
				}
			}
			if token == "" {
				unauthorized(w, r, "missing bearer token", false)
				return
			}
			// A token verified lately is admitted whatever its address's
			// failed logins (see authfail.go): it costs no signature
			// check, and a client behind an address that others' failures
			// used up (a carrier's NAT, an office proxy) keeps working
			// with the token it has. Any other waits its address's turn.
			v, cached := a.recent(token)
			user, admin, exp := v.user, v.admin, v.exp
			if !cached {
				if !a.reserveFailure(w, r) {
					return
				}
				var ok bool
				if user, admin, exp, ok = a.verifyReserved(w, r, token); !ok {
					return
				}
			}
			if device == "" {
				device = DefaultDevice
			} else if !ValidID(device) {
				writeError(w, r, invalidField(deviceField, "must be 1–128 characters of [A-Za-z0-9_.@:-]"))
				return
			}
			r, info := ensureInfo(r)
			info.user, info.device, info.admin, info.expires = user, device, admin, exp
			next.ServeHTTP(w, r)
		})
	}
}

// requireAdmin admits the admin token (compared in constant time) or a JWT
// with role "admin": 401 without valid credentials, 403 for a user token
// without the role.
func (a *authenticator) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := bearer(r)
		if token == "" {
			unauthorized(w, r, "missing bearer token", false)
			return
		}
		// As in requireUser, a JWT verified lately passes an address
		// whose failed logins are used up; the admin token does not: a
		// correct guess that passed while wrong ones got 429 would tell
		// the guesser, and the limit would no longer slow the guessing.
		v, cached := a.recent(token)
		r, info := ensureInfo(r)
		if !cached {
			if !a.reserveFailure(w, r) {
				return
			}
			if a.cfg.AdminToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(a.cfg.AdminToken)) == 1 {
				a.spare(r)
				info.user, info.device, info.admin = adminTokenUser, DefaultDevice, true
				next.ServeHTTP(w, r)
				return
			}
			var ok bool
			if v.user, v.admin, _, ok = a.verifyReserved(w, r, token); !ok {
				return
			}
		}
		user, admin := v.user, v.admin
		info.user, info.device, info.admin = user, DefaultDevice, admin
		if !admin {
			writeError(w, r, newError(codeForbidden, "admin rights needed"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
