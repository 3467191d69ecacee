package e2e

import (
	"net/http"
	"strings"
	"testing"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// GET /sdk/callsig.js serves the client without a token, as a JavaScript
// module that revalidates, with CORS for an allowed origin, as the spec
// says (the test client checks every answer against it).
func TestSDKServed(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example.com"
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.CORSOrigins = []string{origin} }))
	anon := s.Client("nobody")
	anon.Token = ""
	anon.Header.Set("Origin", origin)
	res := anon.Get("/sdk/callsig.js").Want(http.StatusOK)
	h := res.Header
	if h.Get("Content-Type") != "text/javascript; charset=utf-8" || h.Get("Cache-Control") != "no-cache" || h.Get("ETag") == "" {
		t.Fatalf("headers %v", h)
	}
	if h.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("Access-Control-Allow-Origin %q, want %q", h.Get("Access-Control-Allow-Origin"), origin)
	}
	if !strings.Contains(string(res.Body), "export class CallsigClient") {
		t.Fatal("the body is not the client")
	}
	anon.Header.Set("If-None-Match", h.Get("ETag"))
	if again := anon.Get("/sdk/callsig.js"); again.Status != http.StatusNotModified || len(again.Body) != 0 {
		t.Fatalf("revalidation: %d with %d bytes", again.Status, len(again.Body))
	}
}
