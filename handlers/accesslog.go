package handlers

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// accessLog writes one structured line per request once it is answered:
// method, route pattern (never the raw path, which may hold tokens or IDs
// worth keeping out of logs), status, duration, bytes, user and request ID
// (the latter from the request's logger).
func accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := recorderFor(w)
		next.ServeHTTP(rec, r)
		status := rec.Status()
		// Client errors are the client's business: only 5xx raise the level.
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		var user string
		if info := infoFrom(r.Context()); info != nil {
			user = info.user
		}
		loggerFrom(r.Context()).LogAttrs(r.Context(), level, "http request",
			slog.String("method", r.Method),
			slog.String("route", routePattern(r)),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)),
			slog.Int64("bytes", rec.bytes),
			slog.String("user", user),
		)
	})
}

// routePattern is the chi pattern the request matched, or "unmatched". It is
// complete only once routing has happened (after next.ServeHTTP returns, in
// a middleware mounted on the root router).
func routePattern(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		if p := rctx.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}
