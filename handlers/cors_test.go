package handlers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCORS(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) })
	tests := []struct {
		name      string
		origins   []string
		method    string
		origin    string
		preflight bool
		want      int
		allow     string // expected Access-Control-Allow-Origin
	}{
		{"preflight allowed", []string{"https://app.example"}, "OPTIONS", "https://app.example", true, 204, "https://app.example"},
		{"preflight from list", []string{"https://a.example, https://app.example/"}, "OPTIONS", "https://app.example", true, 204, "https://app.example"},
		{"preflight other origin", []string{"https://app.example"}, "OPTIONS", "https://evil.example", true, 299, ""},
		{"preflight no origins configured", nil, "OPTIONS", "https://app.example", true, 299, ""},
		{"preflight wildcard", []string{"*"}, "OPTIONS", "https://any.example", true, 204, "*"},
		{"simple allowed", []string{"https://app.example"}, "GET", "https://app.example", false, 299, "https://app.example"},
		{"simple other origin", []string{"https://app.example"}, "GET", "https://evil.example", false, 299, ""},
		{"same-origin request", []string{"https://app.example"}, "GET", "", false, 299, ""},
		{"prefix is not a match", []string{"https://app.example"}, "GET", "https://app.example.evil", false, 299, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/calls", nil)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if tt.preflight {
				r.Header.Set("Access-Control-Request-Method", "POST")
				r.Header.Set("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
			}
			w := httptest.NewRecorder()
			cors(parseOrigins(tt.origins))(ok).ServeHTTP(w, r)
			h := w.Header()
			if w.Code != tt.want || h.Get("Access-Control-Allow-Origin") != tt.allow {
				t.Fatalf("got %d, allow-origin %q; want %d, %q", w.Code, h.Get("Access-Control-Allow-Origin"), tt.want, tt.allow)
			}
			if tt.allow == "" {
				return
			}
			if tt.preflight {
				for _, want := range []string{"Authorization", "Content-Type", "Idempotency-Key", "X-Device-ID", "Last-Event-ID"} {
					if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
						t.Fatalf("Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), want)
					}
				}
				if !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
					t.Fatalf("Allow-Methods = %q", h.Get("Access-Control-Allow-Methods"))
				}
			} else if !strings.Contains(h.Get("Access-Control-Expose-Headers"), "X-Request-ID") {
				t.Fatalf("Expose-Headers = %q", h.Get("Access-Control-Expose-Headers"))
			}
		})
	}
}

func TestCORSPreflightBeforeAuth(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.CORSOrigins = []string{"https://app.example"} })
	w := do(h, req{method: "OPTIONS", path: "/calls/abc/accept", header: map[string]string{
		"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
	}})
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("preflight through the router: %d %v", w.Code, w.Header())
	}
	// A real request from the origin gets the headers even when refused.
	w = do(h, req{method: "GET", path: "/calls", header: map[string]string{"Origin": "https://app.example"}})
	decodeProblem(t, w, 401, "unauthorized")
	if w.Header().Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("401 lacks CORS headers: %v", w.Header())
	}
}
