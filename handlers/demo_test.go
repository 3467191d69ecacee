package handlers

import (
	"net/http"
	"strings"
	"testing"

	"callsig/web"
)

func TestDemoRoutes(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.Demo = web.Handler() })

	w := do(h, req{method: "GET", path: "/demo"})
	if w.Code != http.StatusMovedPermanently || w.Header().Get("Location") != "/demo/" {
		t.Fatalf("/demo: %d Location %q", w.Code, w.Header().Get("Location"))
	}
	w = do(h, req{method: "GET", path: "/demo?user=alice"})
	if w.Header().Get("Location") != "/demo/?user=alice" {
		t.Fatalf("/demo?user=alice: Location %q", w.Header().Get("Location"))
	}

	// No token needed: the page signs in by itself.
	w = do(h, req{method: "GET", path: "/demo/"})
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/html; charset=utf-8" ||
		!strings.Contains(w.Body.String(), `data-testid="login-user"`) {
		t.Fatalf("/demo/: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if w.Header().Get("X-Request-ID") == "" {
		t.Fatal("demo response without X-Request-ID")
	}
	etag := w.Header().Get("ETag")
	w = do(h, req{method: "GET", path: "/demo/", header: map[string]string{"If-None-Match": etag}})
	if etag == "" || w.Code != http.StatusNotModified {
		t.Fatalf("revalidation with ETag %q: %d", etag, w.Code)
	}

	decodeProblem(t, do(h, req{method: "GET", path: "/demo/../openapi.yaml.js"}), 404, "not_found")
	decodeProblem(t, do(h, req{method: "GET", path: "/demo/missing.css"}), 404, "not_found")
	decodeProblem(t, do(h, req{method: "POST", path: "/demo/", body: `{}`}), 405, "method_not_allowed")

	// Without a demo handler there is no demo.
	decodeProblem(t, do(newTestHandler(t, nil), req{method: "GET", path: "/demo/"}), 404, "not_found")
}
