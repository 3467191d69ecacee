package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"callsig/api"
)

const readyTimeout = 2 * time.Second

// mountSystem registers the unauthenticated endpoints: health, readiness,
// the spec, metrics and, in development mode, the token helper.
func mountSystem(r chi.Router, s *server) {
	healthz := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
	}
	// HEAD too, for health checkers that send it: net/http drops the body.
	r.Get("/healthz", healthz)
	r.Head("/healthz", healthz)
	readyz := func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.deps.Ready(ctx); err != nil {
			if ok, held := s.notReady.allow(time.Now()); ok {
				loggerFrom(r.Context()).Warn("not ready", "err", err, "not_logged_since_last", held)
			}
			writeError(w, r, newError(codeUnavailable, "the server is not ready: its database does not answer"))
			return
		}
		body := map[string]string{"status": "ok"}
		if s.deps.Node != "" {
			body["node"], body["backend"] = s.deps.Node, s.deps.Backend
		}
		writeJSON(w, r, http.StatusOK, body)
	}
	r.Get("/readyz", readyz)
	r.Head("/readyz", readyz)
	r.Get("/openapi.yaml", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(api.Spec)
	})
	// A series that cannot be read now (the database out of reach) is left
	// out and logged, and the rest is served: a scrape failed whole (500)
	// when the store was down, taking every other series (NATS, reports
	// waiting for the store) with it, just when they say what is wrong.
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      scrapeLog{s.log, s.scrapeFailed},
	}))
	if s.deps.DevToken != nil {
		r.With(s.limit, bodyLimit(s.deps.BodyLimit), requireJSON, s.validate.middleware, s.idem).
			Post("/dev/token", devToken(s.deps.DevToken))
	}
}

type devTokenBody struct {
	UserID     string      `json:"userID"`
	TTLSeconds wholeNumber `json:"ttlSeconds"`
}

type devTokenResult struct {
	Token     string `json:"token"`
	UserID    string `json:"userID"`
	ExpiresAt int64  `json:"expiresAt"`
}

// devToken serves POST /dev/token: a user token signed with the server's
// secret, for local development and the demo page.
func devToken(mint func(string, time.Duration) (string, time.Time, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b devTokenBody
		if err := decodeJSON(r, &b, false); err != nil {
			writeError(w, r, err)
			return
		}
		if !ValidID(b.UserID) {
			writeError(w, r, invalidField("userID", "must be 1–128 characters of [A-Za-z0-9_.@:-]"))
			return
		}
		ttl := time.Hour
		if b.TTLSeconds != 0 {
			if b.TTLSeconds < 60 || b.TTLSeconds > 86400 {
				writeError(w, r, invalidField("ttlSeconds", "must be between 60 and 86400"))
				return
			}
			ttl = time.Duration(int64(b.TTLSeconds)) * time.Second
		}
		token, exp, ok := mint(b.UserID, ttl)
		if !ok {
			writeError(w, r, newError(codeNotFound, "tokens are minted only in development mode"))
			return
		}
		writeJSON(w, r, http.StatusOK, devTokenResult{Token: token, UserID: b.UserID, ExpiresAt: exp.UnixMilli()})
	}
}

// scrapeLog logs the series /metrics could not gather (promhttp.Logger),
// at most once per unauthenticatedWarnEvery.
type scrapeLog struct {
	log  *slog.Logger
	some *sometimes
}

func (l scrapeLog) Println(v ...any) {
	if ok, held := l.some.allow(time.Now()); ok {
		l.log.Warn("metrics: a series could not be gathered and is left out", "err", fmt.Sprint(v...), "not_logged_since_last", held)
	}
}

// unauthenticatedWarnEvery is how often at most a warning that any
// client can cause without a token is logged: with the database down,
// every GET /readyz wrote a warning of half a kilobyte and every GET
// /metrics one of more than one, at whatever rate anyone sent them,
// beside their access lines (1000 requests: 740 KB in 0.2 s).
const unauthenticatedWarnEvery = 10 * time.Second

// sometimes lets a log line through at most once per interval and counts
// the ones it held back since.
type sometimes struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	held  int
}

// allow says whether a line may be logged at now and, if so, how many
// were held back since the last one.
func (s *sometimes) allow(now time.Time) (ok bool, held int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() && now.Sub(s.last) < s.every {
		s.held++
		return false, 0
	}
	s.last, held, s.held = now, s.held, 0
	return true, held
}
