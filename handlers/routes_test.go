package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/api"
	"callsig/calls"
)

func TestNewRequiresServiceAndSecret(t *testing.T) {
	if _, err := New(Deps{Auth: AuthConfig{Secret: testSecret}}); err == nil {
		t.Fatal("New without a service succeeded")
	}
	if _, err := New(Deps{Service: calls.NewService(calls.Options{})}); err == nil {
		t.Fatal("New without a secret succeeded")
	}
}

func TestSystemEndpoints(t *testing.T) {
	var ready error
	h := newTestHandler(t, func(d *Deps) {
		d.Ready = func(context.Context) error { return ready }
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		w := do(h, req{method: "GET", path: path})
		if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok"}` {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
	}
	ready = errors.New("database is locked at /secret/path")
	w := do(h, req{method: "GET", path: "/readyz"})
	decodeProblem(t, w, 503, "unavailable")
	if strings.Contains(w.Body.String(), "/secret/path") {
		t.Fatalf("readiness error leaked: %s", w.Body)
	}

	w = do(h, req{method: "GET", path: "/openapi.yaml"})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/yaml" || !bytes.Equal(w.Body.Bytes(), api.Spec) {
		t.Fatalf("/openapi.yaml: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if w.Header().Get("X-Request-ID") == "" {
		t.Fatal("response without X-Request-ID")
	}
}

func TestRoutingProblems(t *testing.T) {
	h := newTestHandler(t, nil)
	decodeProblem(t, do(h, req{method: "GET", path: "/nope"}), 404, "not_found")
	w := do(h, req{method: "DELETE", path: "/calls", header: authed(t, "alice")})
	decodeProblem(t, w, 405, "method_not_allowed")
	if w.Header().Get("Allow") != "GET, POST" {
		t.Fatalf("Allow = %q", w.Header().Get("Allow"))
	}
	decodeProblem(t, do(h, req{method: "GET", path: "/calls/abcdefghijklmnop/accept", header: authed(t, "alice")}), 405, "method_not_allowed")
	// No stream configured: no /events route.
	decodeProblem(t, do(h, req{method: "GET", path: "/events"}), 404, "not_found")
}

func TestCallRoutesMiddleware(t *testing.T) {
	var logs bytes.Buffer
	h := newTestHandler(t, func(d *Deps) {
		d.BodyLimit = 64
		d.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	alice := authed(t, "alice")
	decodeProblem(t, do(h, req{method: "POST", path: "/calls", body: `{"invitees":["bob"]}`}), 401, "unauthorized")
	decodeProblem(t, do(h, req{method: "POST", path: "/calls", body: `{"invitees":["` + strings.Repeat("b", 80) + `"]}`, header: alice}), 413, "payload_too_large")
	hdr := authed(t, "alice")
	hdr["Content-Type"] = "text/plain"
	decodeProblem(t, do(h, req{method: "POST", path: "/calls", body: `{"invitees":["bob"]}`, header: hdr}), 415, "unsupported_media_type")

	// A valid request reaches the service; its unexpected error is a logged 500.
	w := do(h, req{method: "POST", path: "/calls/abcdefghijklmnop/accept", header: alice})
	decodeProblem(t, w, 500, "internal")
	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]any{"msg": "http request", "method": "POST", "route": "/calls/{callID}/accept",
		"status": float64(500), "user": "alice", "request_id": w.Header().Get("X-Request-ID")}
	for k, v := range want {
		if line[k] != v {
			t.Fatalf("access log %s = %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if !strings.Contains(logs.String(), errBroken.Error()) {
		t.Fatalf("service error not logged: %s", logs.String())
	}
}

type fakeStream struct{ user, device string }

func (f *fakeStream) ServeEvents(w http.ResponseWriter, r *http.Request, userID, deviceID string, _ time.Duration) {
	f.user, f.device = userID, deviceID
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": hello\n\n"))
	// Streams need Flush to reach the client through every middleware.
	if err := http.NewResponseController(w).Flush(); err != nil {
		_, _ = w.Write([]byte("flush failed: " + err.Error()))
	}
}

func TestEventsRoute(t *testing.T) {
	stream := &fakeStream{}
	h := newTestHandler(t, func(d *Deps) { d.Events = stream })
	w := do(h, req{method: "GET", path: "/events?access_token=" + token(t, "bob", nil) + "&deviceID=tab-1"})
	if w.Code != 200 || w.Body.String() != ": hello\n\n" || !w.Flushed || stream.user != "bob" || stream.device != "tab-1" {
		t.Fatalf("events: %d %q flushed=%v stream=%+v", w.Code, w.Body, w.Flushed, stream)
	}
	w = do(h, req{method: "GET", path: "/events", header: authed(t, "carol")})
	if w.Code != 200 || stream.user != "carol" || stream.device != "default" {
		t.Fatalf("events with header: %d %+v", w.Code, stream)
	}
	decodeProblem(t, do(h, req{method: "GET", path: "/events?access_token=bad"}), 401, "unauthorized")
	for _, beat := range []string{"comment", "event"} {
		if w := do(h, req{method: "GET", path: "/events?heartbeat=" + beat, header: authed(t, "dave")}); w.Code != 200 || stream.user != "dave" {
			t.Fatalf("events with heartbeat=%s: %d %+v", beat, w.Code, stream)
		}
	}
	for _, beat := range []string{"frame", "Event", ""} {
		stream.user = ""
		w := do(h, req{method: "GET", path: "/events?heartbeat=" + beat, header: authed(t, "erin")})
		if beat == "" { // empty: as if left out
			if w.Code != 200 || stream.user != "erin" {
				t.Fatalf("events with heartbeat= (empty): %d %+v", w.Code, stream)
			}
			continue
		}
		decodeProblem(t, w, 400, "invalid_request")
		if stream.user != "" {
			t.Fatalf("heartbeat=%s: the stream was served", beat)
		}
	}
}

func TestMetricsUseRoutePatterns(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newTestHandler(t, func(d *Deps) { d.Registry = reg })
	do(h, req{method: "GET", path: "/calls/abcdefghijklmnop", header: authed(t, "alice")})
	do(h, req{method: "GET", path: "/no/such/thing"})
	w := do(h, req{method: "GET", path: "/metrics"})
	body := w.Body.String()
	for _, want := range []string{
		`callsig_http_requests_total{method="GET",route="/calls/{callID}",status="500"} 1`,
		`callsig_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`callsig_http_request_duration_seconds_count{method="GET",route="/calls/{callID}"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "abcdefghijklmnop") || strings.Contains(body, "/no/such/thing") {
		t.Fatal("raw paths in metric labels")
	}
	// A second handler on the same registry reuses the collectors.
	if _, err := New(Deps{Service: calls.NewService(calls.Options{}), Auth: AuthConfig{Secret: testSecret}, Registry: reg}); err != nil {
		t.Fatalf("New on a used registry: %v", err)
	}
}

func TestDevToken(t *testing.T) {
	devMode := true
	h := newTestHandler(t, func(d *Deps) {
		d.DevToken = func(user string, ttl time.Duration) (string, time.Time, bool) {
			return "tok-" + user + "-" + ttl.String(), time.UnixMilli(5000), devMode
		}
	})
	w := do(h, req{method: "POST", path: "/dev/token", body: `{"userID":"alice","ttlSeconds":120}`})
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"token":"tok-alice-2m0s","userID":"alice","expiresAt":5000}` {
		t.Fatalf("dev token: %d %s", w.Code, w.Body)
	}
	decodeProblem(t, do(h, req{method: "POST", path: "/dev/token", body: `{"userID":"a b"}`}), 400, "invalid_request")
	devMode = false
	decodeProblem(t, do(h, req{method: "POST", path: "/dev/token", body: `{"userID":"alice"}`}), 404, "not_found")
}

// The access log wrote the request's method as the client sent it: a
// method of 60 KB (anything net/http parses as a token, up to the header
// block's 64 KiB) made a 60 KB line at Info, with no token needed. It
// logs what the metrics label: OTHER for a method it does not serve.
func TestAccessLogBoundsTheMethod(t *testing.T) {
	var logs bytes.Buffer
	h := newTestHandler(t, func(d *Deps) { d.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	do(h, req{method: strings.Repeat("A", 20000), path: "/healthz"})
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(logs.Bytes()), &line); err != nil {
		t.Fatalf("%v: %.300s", err, logs.String())
	}
	if line["method"] != "OTHER" || logs.Len() > 1000 {
		t.Fatalf("access log of a 20000-byte method: %d bytes, method %.40v", logs.Len(), line["method"])
	}
}

// With the store down, every GET /readyz (no token needed) logged a
// warning with the store's error, at the rate anyone sent them: one is
// logged, then at most one per unauthenticatedWarnEvery, with the count
// of those held back.
func TestNotReadyWarningIsSampled(t *testing.T) {
	var logs bytes.Buffer
	h := newTestHandler(t, func(d *Deps) {
		d.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		d.Ready = func(context.Context) error { return errors.New("store down") }
	})
	for range 50 {
		if w := do(h, req{method: "GET", path: "/readyz"}); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz: %d", w.Code)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"not ready"`); n != 1 {
		t.Fatalf("50 GET /readyz with the store down: %d warnings", n)
	}
	s := &sometimes{every: time.Second}
	now := time.Now()
	for i, want := range []bool{true, false, false} {
		if ok, _ := s.allow(now.Add(time.Duration(i) * time.Millisecond)); ok != want {
			t.Fatalf("allow #%d = %v", i, ok)
		}
	}
	if ok, held := s.allow(now.Add(time.Second)); !ok || held != 2 {
		t.Fatalf("a second later: %v, %d held", ok, held)
	}
}
