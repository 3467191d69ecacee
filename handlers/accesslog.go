package handlers

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// accessLog writes one structured line per request once it is answered:
// method, route pattern (never the raw path, which may hold tokens or IDs
// worth keeping out of logs), status, duration, bytes, user and request ID
// (the latter from the request's logger). A request whose handler took the
// connection over (GET /events, a lingering close) is logged when that
// connection closes, with the bytes written on it and the whole duration.
func accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := recorderFor(w)
		rec.onHijack = func() func(int64) {
			// Taken now, on the handler's goroutine: the request's routing
			// state is recycled once the handler returns.
			line := accessLine(r, rec)
			before := rec.bytes
			return func(written int64) { line(before+written, time.Since(start)) }
		}
		next.ServeHTTP(rec, r)
		if rec.hijacked {
			return // logged when the connection closes
		}
		accessLine(r, rec)(rec.bytes, time.Since(start))
	})
}

// accessLine fixes a request's log line but for its size and duration.
func accessLine(r *http.Request, rec *responseRecorder) func(bytes int64, d time.Duration) {
	status := rec.Status()
	// Client errors are the client's business: only 5xx raise the level.
	// A 503 is a state the server is in (overload, shutdown, the store out
	// of reach, each logged once where it starts), not a fault of the
	// request: at Error, every client's requests during an outage wrote a
	// line that no log level could hold back but hiding every error (an
	// operator review); at Warn, CALLSIG_LOG_LEVEL=error does.
	level := slog.LevelInfo
	switch {
	case status == http.StatusServiceUnavailable:
		level = slog.LevelWarn
	case status >= 500:
		level = slog.LevelError
	}
	// The method as the metrics label it (a constant string): a client
	// chose it, up to the 64 KiB of a request's header block, and every
	// such request wrote that much to the log at Info. Never a slice of
	// the request line either (its URL may hold a token), which a
	// stream's line would keep for the stream's life.
	log, method, route := loggerFrom(r.Context()), methodLabel(r.Method), routePattern(r)
	var user, id string
	if info := infoFrom(r.Context()); info != nil {
		user = info.user
		if info.base != nil {
			// The server's logger and the ID as an attribute, the same
			// line: the request's logger is a copy of the handler with
			// the ID formatted in, some 300 bytes a stream would keep.
			log, id = info.base, info.id
		}
	}
	return func(bytes int64, d time.Duration) {
		attrs := [...]slog.Attr{
			slog.String("request_id", id),
			slog.String("method", method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Duration("duration", d),
			slog.Int64("bytes", bytes),
			slog.String("user", user),
		}
		line := attrs[:]
		if id == "" {
			line = line[1:] // the logger has it, or there is none
		}
		log.LogAttrs(context.Background(), level, "http request", line...)
	}
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
