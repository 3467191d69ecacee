package handlers

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"time"
)

// requestInfo is the per-request state that outer middleware (access log,
// metrics) read after inner middleware (auth) filled it in. It is written
// and read on the request's own goroutine only.
type requestInfo struct {
	id  string
	log *slog.Logger // base with the ID attached
	// base is the server's logger, for a line that outlives the request
	// (see accessLine).
	base   *slog.Logger
	user   string // authenticated user ID ("" before auth)
	device string
	admin  bool
	// expires is the exp of the user's token (zero before auth).
	expires time.Time
}

type ctxKey int

const (
	infoKey ctxKey = iota
	bodyKey
)

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(infoKey).(*requestInfo)
	return info
}

// ensureInfo returns the request's info, attaching a fresh one when no
// request-ID middleware ran (a middleware tested on its own).
func ensureInfo(r *http.Request) (*http.Request, *requestInfo) {
	if info := infoFrom(r.Context()); info != nil {
		return r, info
	}
	info := &requestInfo{}
	return r.WithContext(context.WithValue(r.Context(), infoKey, info)), info
}

// requestID gives every request an ID: the client's X-Request-ID when it is
// sane, else a generated one. It is echoed in the response header and
// attached to every log line of the request.
func requestID(base *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-ID")
			if !validRequestID(id) {
				id = rand.Text()
			}
			w.Header().Set("X-Request-ID", id)
			info := &requestInfo{id: id, log: base.With("request_id", id), base: base}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey, info)))
		})
	}
}

// validRequestID accepts IDs safe to echo and log: 1–128 printable
// characters from a conservative set (UUIDs, ULIDs, trace IDs).
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '+' || c == '=':
		default:
			return false
		}
	}
	return true
}
