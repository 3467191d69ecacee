package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"callsig/calls"
)

// Transport error codes; the domain's codes come from package calls.
const (
	codeInvalidRequest       = "invalid_request"
	codeUnauthorized         = "unauthorized"
	codeForbidden            = "forbidden"
	codeNotFound             = "not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeIdempotencyConflict  = "idempotency_conflict"
	codeRequestTimeout       = "request_timeout"
	codePayloadTooLarge      = "payload_too_large"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeRateLimited          = "rate_limited"
	codeInternal             = "internal"
	codeUnavailable          = "unavailable"
)

type codeInfo struct {
	status int
	title  string
}

// codes maps every error code of the contract to its status and title.
var codes = map[string]codeInfo{
	codeInvalidRequest:                 {http.StatusBadRequest, "Invalid request"},
	codeUnauthorized:                   {http.StatusUnauthorized, "Unauthorized"},
	codeForbidden:                      {http.StatusForbidden, "Forbidden"},
	string(calls.CodeCallNotFound):     {http.StatusNotFound, "Call not found"},
	codeNotFound:                       {http.StatusNotFound, "Not found"},
	codeMethodNotAllowed:               {http.StatusMethodNotAllowed, "Method not allowed"},
	string(calls.CodeWrongMode):        {http.StatusConflict, "Wrong mode"},
	string(calls.CodeInvalidState):     {http.StatusConflict, "Invalid state"},
	string(calls.CodeCallEnded):        {http.StatusConflict, "Call ended"},
	string(calls.CodeAlreadyInCall):    {http.StatusConflict, "Already in call"},
	codeIdempotencyConflict:            {http.StatusConflict, "Idempotency conflict"},
	string(calls.CodeDeliveryInFlight): {http.StatusConflict, "Delivery in flight"},
	string(calls.CodeEndpointDisabled): {http.StatusConflict, "Endpoint disabled"},
	string(calls.CodeWebhookLimit):     {http.StatusConflict, "Webhook limit reached"},
	codeRequestTimeout:                 {http.StatusRequestTimeout, "Request timeout"},
	codePayloadTooLarge:                {http.StatusRequestEntityTooLarge, "Payload too large"},
	codeUnsupportedMediaType:           {http.StatusUnsupportedMediaType, "Unsupported media type"},
	codeRateLimited:                    {http.StatusTooManyRequests, "Too many requests"},
	codeInternal:                       {http.StatusInternalServerError, "Internal server error"},
	codeUnavailable:                    {http.StatusServiceUnavailable, "Service unavailable"},
}

// problem is an RFC 9457 problem document with the contract's code.
type problem struct {
	Type   string             `json:"type"`
	Title  string             `json:"title"`
	Status int                `json:"status"`
	Detail string             `json:"detail,omitempty"`
	Code   string             `json:"code"`
	Errors []calls.FieldError `json:"errors,omitempty"`
}

// httpError is an error the transport itself raises (auth, limits, routing,
// malformed bodies). status overrides the code's usual status, for the one
// code that has two (idempotency_conflict: 409 or 422).
type httpError struct {
	code   string
	status int
	detail string
	fields []calls.FieldError
}

func (e *httpError) Error() string { return e.code + ": " + e.detail }

func newError(code, format string, args ...any) *httpError {
	return &httpError{code: code, detail: fmt.Sprintf(format, args...)}
}

// invalidField is a 400 invalid_request naming one field.
func invalidField(field, format string, args ...any) *httpError {
	msg := fmt.Sprintf(format, args...)
	return &httpError{code: codeInvalidRequest, detail: field + ": " + msg,
		fields: []calls.FieldError{{Field: field, Message: msg}}}
}

// retryAfterUnavailable is the Retry-After of a 503: overload, a busy
// database and a shutdown all pass within seconds (or the client lands on
// another instance).
const retryAfterUnavailable = "1"

// statusClientClosed is what the access log and the metrics record for a
// request its client gave up on before the answer (nginx's 499): nobody
// receives it, and counted as a 500 it made every impatient client look
// like a bug on the dashboards.
const statusClientClosed = 499

// writeError is the one place that turns an error into a problem+json
// response. Domain errors keep their message; anything unexpected becomes a
// 500 with a generic detail and is logged with the request's ID. A 503
// always carries Retry-After.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		loggerFrom(r.Context()).Info("request cancelled by the client", "err", err)
		w.WriteHeader(statusClientClosed)
		return
	}
	p := toProblem(err)
	var raised *httpError // raised on purpose: whoever raised it logged what matters
	if p.Status >= 500 && !errors.As(err, &raised) {
		log := loggerFrom(r.Context())
		switch {
		case p.Code == codeUnavailable:
			log.Warn("request refused: the store cannot serve now", "err", err)
		default:
			log.Error("request failed", "err", err)
		}
	}
	status, body := p.Status, encodeProblem(p)
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", retryAfterUnavailable)
	}
	// Always sized: an answer written before the connection closes (413,
	// 408) must be complete without a chunked terminator.
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func encodeProblem(p problem) []byte {
	body, _ := json.Marshal(p) // strings and ints only: cannot fail
	return body
}

// toProblem maps an error to its problem document.
func toProblem(err error) problem {
	var (
		code   = codeInternal
		status int
		detail string
		fields []calls.FieldError
	)
	var de *calls.Error
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &de):
		if _, known := codes[string(de.Code)]; known {
			code, detail, fields = string(de.Code), de.Message, de.Fields
		}
	case errors.As(err, &he):
		code, status, detail, fields = he.code, he.status, he.detail, he.fields
	case errors.As(err, &mbe):
		code, detail = codePayloadTooLarge, fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, context.DeadlineExceeded):
		// The request's deadline passed waiting for the store (its read
		// pool or writer queue full): overload, not a bug.
		code, detail = codeUnavailable, "the server is overloaded; retry later"
	}
	info, ok := codes[code]
	if !ok {
		code, info = codeInternal, codes[codeInternal]
	}
	if status == 0 {
		status = info.status
	}
	if code == codeInternal {
		detail, fields = "an unexpected error occurred; quote the X-Request-ID header when reporting it", nil
	}
	return problem{
		Type: "urn:callsig:error:" + code, Title: info.title, Status: status,
		Detail: detail, Code: code, Errors: fields,
	}
}

// loggerFrom returns the request's logger (with its request ID), or a
// discarding one outside a request.
func loggerFrom(ctx context.Context) *slog.Logger {
	if info := infoFrom(ctx); info != nil && info.log != nil {
		return info.log
	}
	return slog.New(slog.DiscardHandler)
}
