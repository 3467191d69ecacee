package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/calls"
)

var testSecret = []byte("test-secret-0123456789abcdef")

// brokenStore fails every operation, as a store whose disk is gone would.
type brokenStore struct{}

var errBroken = errors.New("disk on fire")

func (brokenStore) Update(context.Context, func(calls.Tx) error) error { return errBroken }
func (brokenStore) Call(context.Context, string) (*calls.Call, error)  { return nil, errBroken }
func (brokenStore) ListCalls(context.Context, string, int64, int) ([]*calls.Call, error) {
	return nil, errBroken
}
func (brokenStore) DueDeadlines(context.Context, int64, int) ([]calls.Deadline, error) {
	return nil, errBroken
}
func (brokenStore) NextDeadline(context.Context) (int64, error) { return 0, errBroken }

// newTestHandler builds the whole API over a service whose store always
// fails (the happy paths run over a real store in calls_test.go); edit
// adjusts the deps.
func newTestHandler(t *testing.T, edit func(*Deps)) http.Handler {
	t.Helper()
	d := Deps{
		Service: calls.NewService(calls.Options{Store: brokenStore{}}),
		Auth:    AuthConfig{Secret: testSecret, AdminToken: "admin-secret"},
	}
	if edit != nil {
		edit(&d)
	}
	h, err := New(d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

// token mints an HS256 token for sub with extra claims; exp defaults to an hour ahead.
func token(t *testing.T, sub string, extra jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type req struct {
	method, path, body string
	header             map[string]string
	remote             string // RemoteAddr ("": httptest's 192.0.2.1:1234)
}

// do serves one request and returns the recorded response.
func do(h http.Handler, rq req) *httptest.ResponseRecorder {
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	r := httptest.NewRequest(rq.method, rq.path, body)
	if rq.remote != "" {
		r.RemoteAddr = rq.remote
	}
	if rq.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range rq.header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func authed(t *testing.T, user string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token(t, user, nil)}
}

// decodeProblem checks w is a problem document with status and code.
func decodeProblem(t *testing.T, w *httptest.ResponseRecorder, status int, code string) problem {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", w.Body, err)
	}
	if p.Code != code || p.Status != status || p.Type != "urn:callsig:error:"+code || p.Title == "" {
		t.Fatalf("problem = %+v, want code %s status %d", p, code, status)
	}
	return p
}
