package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

func TestHandlerServesTheFiles(t *testing.T) {
	for path, ctype := range map[string]string{
		"/demo/":           "text/html; charset=utf-8",
		"/demo/index.html": "text/html; charset=utf-8",
		"/demo/app.js":     "text/javascript; charset=utf-8",
		"/demo/style.css":  "text/css; charset=utf-8",
	} {
		w := get(t, path)
		h := w.Header()
		if w.Code != http.StatusOK || h.Get("Content-Type") != ctype || h.Get("Cache-Control") != "no-cache" ||
			h.Get("ETag") == "" || h.Get("X-Content-Type-Options") != "nosniff" || w.Body.Len() == 0 {
			t.Errorf("%s: %d %v", path, w.Code, h)
		}
		if strings.HasPrefix(ctype, "text/html") != (h.Get("Content-Security-Policy") != "") {
			t.Errorf("%s: Content-Security-Policy %q", path, h.Get("Content-Security-Policy"))
		}
	}
	for _, path := range []string{"/demo/nope.js", "/demo/demo/app.js", "/elsewhere"} {
		if w := get(t, path); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, w.Code)
		}
	}
}

// The page loads nothing from another origin and keeps to its
// Content-Security-Policy: no inline script, style or event handler.
func TestPageIsSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(`)
	inline := regexp.MustCompile(`(?i)<script>|<style|\son[a-z]+\s*=|\sstyle\s*=|javascript:`)
	err := fs.WalkDir(files, "demo", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		if m := external.Find(body); m != nil {
			t.Errorf("%s refers to another origin or resource: %q", name, m)
		}
		if strings.HasSuffix(name, ".html") {
			if m := inline.Find(body); m != nil {
				t.Errorf("%s has inline code or style: %q", name, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The test hooks the browser test and other clients' tests rely on.
func TestPageHasTestHooks(t *testing.T) {
	html, _ := fs.ReadFile(files, "demo/index.html")
	js, _ := fs.ReadFile(files, "demo/app.js")
	all := string(html) + string(js)
	for _, id := range []string{
		"login-user", "login-submit", "invitees", "mode", "timeout", "call-submit", "incoming-call", "accept",
		"reject", "cancel", "call-state", "user-state-", "end", "quit", "invite-more", "event-log",
		"join-call-id", "join-submit", "join", "connection", "load-more",
	} {
		if !strings.Contains(all, `"`+id+`"`) && !strings.Contains(all, `'`+id+`'`) {
			t.Errorf("no data-testid %q", id)
		}
	}
	if !strings.Contains(string(js), `'data-call-id'`) {
		t.Error("cards carry no data-call-id")
	}
}

// The client is served as a JavaScript module that revalidates: 200 with
// an ETag, then 304 for that ETag.
func TestSDKHandler(t *testing.T) {
	w := httptest.NewRecorder()
	SDKHandler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, SDKPath, nil))
	h := w.Header()
	if w.Code != http.StatusOK || h.Get("Content-Type") != "text/javascript; charset=utf-8" || h.Get("Cache-Control") != "no-cache" ||
		h.Get("ETag") == "" || !strings.Contains(w.Body.String(), "export class CallsigClient") {
		t.Fatalf("GET %s: %d %v", SDKPath, w.Code, h)
	}
	req := httptest.NewRequest(http.MethodGet, SDKPath, nil)
	req.Header.Set("If-None-Match", h.Get("ETag"))
	w2 := httptest.NewRecorder()
	SDKHandler().ServeHTTP(w2, req)
	if w2.Code != http.StatusNotModified || w2.Body.Len() != 0 {
		t.Fatalf("revalidation: %d, %d bytes", w2.Code, w2.Body.Len())
	}
}
