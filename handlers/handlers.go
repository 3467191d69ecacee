package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"callsig/api"
	"callsig/calls"
)

// Deps is everything the HTTP layer needs, wired by cmd/api.
type Deps struct {
	Service *calls.Service // required
	Auth    AuthConfig     // Secret required
	// Idempotency stores Idempotency-Key records (db.Store). Nil disables
	// idempotency: keys are then ignored.
	Idempotency IdempotencyStore
	// Ready reports whether the server can serve (the database answers);
	// nil means always ready.
	Ready func(ctx context.Context) error
	// Node and Backend name this node in /readyz (cluster mode: which
	// node of several answered).
	Node, Backend string
	Logger        *slog.Logger // nil discards
	// Registry receives the HTTP metrics and is served at /metrics; nil
	// means a fresh registry.
	Registry *prometheus.Registry
	// CORSOrigins are the browser origins allowed (exact match, or "*");
	// entries may be comma-separated lists. Empty: no CORS headers.
	CORSOrigins []string
	// BodyLimit is the largest request body in bytes (0: DefaultBodyLimit).
	BodyLimit int64
	// AnswerTimeout bounds a request other than the event stream, its
	// answer written included (0: DefaultAnswerTimeout; see writeDeadline).
	AnswerTimeout time.Duration
	// Answers follows the connections with a request in progress, for a
	// shutdown to cut their answers short; the server must have its
	// ConnState as hook (nil: one of the handler's own, which nothing
	// cuts).
	Answers *Answers
	// RateLimit is requests per second per user (0: no limit), with bursts
	// of RateBurst (0: the rate rounded up, at least 1).
	RateLimit float64
	RateBurst int
	// Events serves GET /events when set.
	Events EventStream
	// DevToken mints a user token for POST /dev/token (development mode
	// only); nil leaves the route out, ok=false answers 404.
	DevToken func(userID string, ttl time.Duration) (token string, expiresAt time.Time, ok bool)
	// Webhooks serves the admin /webhooks endpoints when set.
	Webhooks WebhookAdmin
	// Demo serves the browser demo under /demo/ (package web) when set.
	Demo http.Handler
	// SDK serves the JavaScript client at GET /sdk/callsig.js (package web)
	// when set.
	SDK http.Handler
}

// EventStream serves one user's Server-Sent Events stream (package sse).
// The request is authenticated; the handler owns the response until the
// client leaves or r.Context() is done. tokenLeft is how long the token has
// before its exp: the stream warns before then and ends at it.
type EventStream interface {
	ServeEvents(w http.ResponseWriter, r *http.Request, userID, deviceID string, tokenLeft time.Duration)
}

// requestTimeout bounds REST requests (never the event stream), so a stuck
// dependency cannot pin a connection forever.
const requestTimeout = 30 * time.Second

const eventsRoute = "/events"

// sdkRoute is where the JavaScript client is served.
const sdkRoute = "/sdk/callsig.js"

// server holds what the routes and middleware share.
type server struct {
	deps     Deps
	log      *slog.Logger
	auth     *authenticator
	metrics  *httpMetrics
	validate *validator
	limit    func(http.Handler) http.Handler
	idem     func(http.Handler) http.Handler
	// notReady and scrapeFailed sample the warnings /readyz and /metrics
	// log while the store is down: anyone may call them, as often as
	// they like.
	notReady, scrapeFailed *sometimes
}

// New builds the HTTP handler of the whole API.
func New(d Deps) (http.Handler, error) {
	if d.Service == nil {
		return nil, errors.New("handlers: Deps.Service is required")
	}
	if len(d.Auth.Secret) == 0 {
		return nil, errors.New("handlers: Deps.Auth.Secret is required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.BodyLimit <= 0 {
		d.BodyLimit = DefaultBodyLimit
	}
	if d.AnswerTimeout <= 0 {
		d.AnswerTimeout = DefaultAnswerTimeout
	}
	if d.Answers == nil {
		d.Answers = &Answers{}
	}
	if d.Ready == nil {
		d.Ready = func(context.Context) error { return nil }
	}
	s := &server{deps: d, log: d.Logger, auth: newAuthenticator(d.Auth), limit: passThrough, idem: passThrough,
		notReady: &sometimes{every: unauthenticatedWarnEvery}, scrapeFailed: &sometimes{every: unauthenticatedWarnEvery}}
	var err error
	if s.metrics, err = newHTTPMetrics(d.Registry); err != nil {
		return nil, fmt.Errorf("handlers: metrics: %w", err)
	}
	doc, err := api.Document()
	if err != nil {
		return nil, fmt.Errorf("handlers: %w", err)
	}
	if s.validate, err = newValidator(doc); err != nil {
		return nil, fmt.Errorf("handlers: openapi router: %w", err)
	}
	if d.RateLimit > 0 {
		s.limit = newRateLimiter(d.RateLimit, d.RateBurst, time.Now).middleware
		s.auth.limitFailures(time.Now)
	}
	if d.Idempotency != nil {
		s.idem = newIdempotency(d.Idempotency, time.Now).middleware
	}
	return s.routes(), nil
}

func (s *server) routes() http.Handler {
	r := chi.NewRouter()
	// Every request, streams included: none of these buffers the body.
	r.Use(writeDeadline(s.deps.Answers, s.deps.AnswerTimeout), requestID(s.log), accessLog, s.metrics.middleware, recoverPanics, refuseOverflow, cors(parseOrigins(s.deps.CORSOrigins)), oneEach)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, newError(codeNotFound, "no such resource: %s", r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		if allow := allowedMethods(r, req.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeError(w, req, newError(codeMethodNotAllowed, "method %s not allowed on %s", req.Method, req.URL.Path))
	})

	mountSystem(r, s)
	s.mountPprof(r)
	mountDemo(r, s.deps.Demo)
	if s.deps.SDK != nil {
		// Static and public, like the demo: a page loads it before it has
		// a token.
		r.Get(sdkRoute, s.deps.SDK.ServeHTTP)
	}

	// REST: authenticated, limited, read whole, validated, idempotent.
	r.Group(func(r chi.Router) {
		r.Use(s.auth.requireUser(false), s.limit, wellFormedQuery, timeout(requestTimeout), bodyLimit(s.deps.BodyLimit),
			requireJSON, s.validate.middleware, s.idem)
		mountCalls(r, s.deps.Service)
	})

	// Admin: the admin token or a JWT with role "admin".
	r.Group(func(r chi.Router) {
		r.Use(s.auth.requireAdmin, s.limit, wellFormedQuery, timeout(requestTimeout), bodyLimit(s.deps.BodyLimit),
			requireJSON, s.validate.middleware, s.idem)
		s.mountAdmin(r)
	})

	// The event stream: authenticated (also by ?access_token=) and limited,
	// but never buffered, validated or timed out.
	if s.deps.Events != nil {
		r.With(s.auth.requireUser(true), s.limit, wellFormedQuery, noWriteDeadline).Get(eventsRoute, func(w http.ResponseWriter, r *http.Request) {
			// The one query parameter the stream itself reads that
			// requireUser does not check (the validator never sees the
			// stream): a client asking for something unknown is told so,
			// rather than silently getting comments.
			if h := r.URL.Query().Get("heartbeat"); h != "" && h != "comment" && h != "event" {
				writeError(w, r, invalidField("heartbeat", "must be comment or event"))
				return
			}
			info := infoFrom(r.Context())
			s.deps.Events.ServeEvents(w, r, info.user, info.device, tokenLeft(info.expires))
		})
	}
	return r
}

// allowedMethods lists the methods that path is routed for, for Allow.
func allowedMethods(r *chi.Mux, path string) string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete} {
		if r.Match(chi.NewRouteContext(), m, path) {
			allow = append(allow, m)
		}
	}
	return strings.Join(allow, ", ")
}

// timeout gives REST requests a deadline through their context.
func timeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// tokenLeft is the time until exp by the wall clock JWTs are checked with;
// the stream then counts it down on its own clock. Never 0 (which would
// mean "no limit") for a token that has one.
func tokenLeft(exp time.Time) time.Duration {
	if exp.IsZero() {
		return 0
	}
	return max(time.Until(exp), time.Nanosecond)
}

func passThrough(next http.Handler) http.Handler { return next }
