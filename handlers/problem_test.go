package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"callsig/calls"
)

func TestToProblem(t *testing.T) {
	generic := "an unexpected error occurred; quote the X-Request-ID header when reporting it"
	tests := []struct {
		name       string
		err        error
		status     int
		code       string
		detail     string
		wantFields int
	}{
		{"invalid request", &calls.Error{Code: calls.CodeInvalidRequest, Message: "invitees: too many",
			Fields: []calls.FieldError{{Field: "invitees", Message: "too many"}}}, 400, "invalid_request", "invitees: too many", 1},
		{"forbidden", calls.ErrForbidden, 403, "forbidden", "forbidden", 0},
		{"call not found", calls.ErrCallNotFound, 404, "call_not_found", "call not found", 0},
		{"wrong mode", calls.ErrWrongMode, 409, "wrong_mode", "wrong mode", 0},
		{"invalid state", calls.ErrInvalidState, 409, "invalid_state", "invalid state", 0},
		{"call ended", calls.ErrCallEnded, 409, "call_ended", "call ended", 0},
		{"already in call", calls.ErrAlreadyInCall, 409, "already_in_call", "already in call", 0},
		{"wrapped domain error", fmt.Errorf("accept c1: %w", calls.ErrCallEnded), 409, "call_ended", "call ended", 0},
		{"unknown domain code", &calls.Error{Code: "bogus", Message: "secret internals"}, 500, "internal", generic, 0},
		{"unauthorized", newError(codeUnauthorized, "token is expired"), 401, "unauthorized", "token is expired", 0},
		{"not found", newError(codeNotFound, "nope"), 404, "not_found", "nope", 0},
		{"method not allowed", newError(codeMethodNotAllowed, "no"), 405, "method_not_allowed", "no", 0},
		{"idempotency in flight", newError(codeIdempotencyConflict, "busy"), 409, "idempotency_conflict", "busy", 0},
		{"idempotency other body", &httpError{code: codeIdempotencyConflict, status: 422, detail: "other"}, 422, "idempotency_conflict", "other", 0},
		{"payload too large", &http.MaxBytesError{Limit: 10}, 413, "payload_too_large", "request body is larger than 10 bytes", 0},
		{"wrapped max bytes", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 10}), 413, "payload_too_large", "request body is larger than 10 bytes", 0},
		{"unsupported media type", newError(codeUnsupportedMediaType, "json please"), 415, "unsupported_media_type", "json please", 0},
		{"rate limited", newError(codeRateLimited, "slow down"), 429, "rate_limited", "slow down", 0},
		{"unavailable", newError(codeUnavailable, "db down"), 503, "unavailable", "db down", 0},
		{"store unavailable", fmt.Errorf("accept c1: %w", fmt.Errorf("%w: database is locked", calls.ErrUnavailable)), 503, "unavailable", calls.ErrUnavailable.Message, 0},
		{"deadline exceeded", fmt.Errorf("db: begin read: %w", context.DeadlineExceeded), 503, "unavailable", "the server is overloaded; retry later", 0},
		{"invalid field", invalidField("count", "must be an integer"), 400, "invalid_request", "count: must be an integer", 1},
		{"plain error", errors.New("disk on fire at /var/lib"), 500, "internal", generic, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := toProblem(tt.err)
			if p.Status != tt.status || p.Code != tt.code || p.Detail != tt.detail || len(p.Errors) != tt.wantFields {
				t.Fatalf("toProblem = %+v, want status %d code %s detail %q", p, tt.status, tt.code, tt.detail)
			}
			if p.Type != "urn:callsig:error:"+tt.code || p.Title == "" {
				t.Fatalf("type/title = %q/%q", p.Type, p.Title)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/", nil)
	writeError(w, r, invalidField("count", "must be an integer"))
	p := decodeProblem(t, w, 400, "invalid_request")
	if len(p.Errors) != 1 || p.Errors[0].Field != "count" {
		t.Fatalf("errors = %+v", p.Errors)
	}

	// Internal details never reach the client.
	w = httptest.NewRecorder()
	writeError(w, r, errors.New("sql: connection refused at 10.0.0.3"))
	decodeProblem(t, w, 500, "internal")
	if strings.Contains(w.Body.String(), "10.0.0.3") {
		t.Fatalf("internal detail leaked: %s", w.Body)
	}

	// A request its client gave up on is no 500 in the access log and
	// the metrics (nobody receives the answer); a cancellation the
	// client did not ask for still is.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w = httptest.NewRecorder()
	writeError(w, r.WithContext(ctx), fmt.Errorf("db: read: %w", context.Canceled))
	if w.Code != statusClientClosed {
		t.Errorf("client gone: status %d, want %d", w.Code, statusClientClosed)
	}
	w = httptest.NewRecorder()
	writeError(w, r, fmt.Errorf("db: read: %w", context.Canceled))
	decodeProblem(t, w, 500, "internal")
}
