package handlers

import (
	"net/http"
	"slices"
	"strings"
)

// CORS headers: what browsers may send and read.
const (
	corsAllowMethods  = "GET, POST, DELETE, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type, Idempotency-Key, X-Device-ID, X-Request-ID, Last-Event-ID"
	corsExposeHeaders = "X-Request-ID, Retry-After, Idempotent-Replayed, WWW-Authenticate"
	corsMaxAge        = "600"
)

// cors lets the configured browser origins call the API. Origins match
// exactly; "*" allows any origin (no credentials are involved: tokens are
// bearer headers or query parameters, never cookies). A preflight from an
// allowed origin is answered here, before authentication.
func cors(origins []string) func(http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return func(next http.Handler) http.Handler {
		if len(origins) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			h := w.Header()
			h.Add("Vary", "Origin")
			if !anyOrigin && !slices.Contains(origins, origin) {
				next.ServeHTTP(w, r)
				return
			}
			if anyOrigin {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
			}
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
				h.Set("Access-Control-Allow-Methods", corsAllowMethods)
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", corsMaxAge)
				w.WriteHeader(http.StatusNoContent)
				return
			}
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
			next.ServeHTTP(w, r)
		})
	}
}

// parseOrigins splits a comma-separated CALLSIG_CORS_ORIGINS value.
func parseOrigins(list []string) []string {
	var out []string
	for _, item := range list {
		for o := range strings.SplitSeq(item, ",") {
			if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
				out = append(out, o)
			}
		}
	}
	return out
}
