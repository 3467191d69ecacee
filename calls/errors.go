package calls

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code; handlers map it to an HTTP
// status and a problem+json body.
type Code string

const (
	CodeInvalidRequest Code = "invalid_request"
	CodeForbidden      Code = "forbidden"
	CodeCallNotFound   Code = "call_not_found"
	CodeWrongMode      Code = "wrong_mode"
	CodeInvalidState   Code = "invalid_state"
	CodeCallEnded      Code = "call_ended"
	CodeAlreadyInCall  Code = "already_in_call"
	// CodeNotFound is an unknown resource other than a call (a webhook
	// endpoint or delivery of the admin API).
	CodeNotFound Code = "not_found"
	// CodeDeliveryInFlight: a webhook delivery cannot be retried while an
	// attempt holds it; its outcome would overwrite the retry.
	CodeDeliveryInFlight Code = "delivery_in_flight"
	// CodeEndpointDisabled: a delivery of a disabled webhook endpoint
	// cannot be retried; it would be failed unsent.
	CodeEndpointDisabled Code = "endpoint_disabled"
	// CodeWebhookLimit: no more webhook endpoints may be registered until
	// one is deleted (webhooks.MaxEndpoints).
	CodeWebhookLimit Code = "webhook_limit"
	// CodeUnavailable: the store cannot serve now (overloaded, busy or
	// closed for shutdown); the same request may succeed when retried.
	CodeUnavailable Code = "unavailable"
)

// Error is a domain error: a stable code, a human message and, for invalid
// input, the offending fields.
type Error struct {
	Code    Code
	Message string
	Fields  []FieldError
}

// FieldError names one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Is lets errors.Is match on the code alone: errors.Is(err, calls.ErrCallEnded).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels to compare against with errors.Is.
var (
	ErrInvalidRequest   = &Error{Code: CodeInvalidRequest, Message: "invalid request"}
	ErrForbidden        = &Error{Code: CodeForbidden, Message: "forbidden"}
	ErrCallNotFound     = &Error{Code: CodeCallNotFound, Message: "call not found"}
	ErrWrongMode        = &Error{Code: CodeWrongMode, Message: "wrong mode"}
	ErrInvalidState     = &Error{Code: CodeInvalidState, Message: "invalid state"}
	ErrCallEnded        = &Error{Code: CodeCallEnded, Message: "call ended"}
	ErrAlreadyInCall    = &Error{Code: CodeAlreadyInCall, Message: "already in call"}
	ErrNotFound         = &Error{Code: CodeNotFound, Message: "not found"}
	ErrDeliveryInFlight = &Error{Code: CodeDeliveryInFlight, Message: "delivery in flight"}
	ErrEndpointDisabled = &Error{Code: CodeEndpointDisabled, Message: "endpoint disabled"}
	// ErrUnavailable is what a Store wraps its transient failures in (a
	// closed store, a lock held past the busy timeout), so the transport
	// answers "retry later" instead of "internal error". Its message is
	// what the client sees; the wrapped cause is for the log.
	ErrUnavailable = &Error{Code: CodeUnavailable, Message: "the server cannot serve this now (overloaded, busy or shutting down); retry later"}
)

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: CodeInvalidRequest, Message: field + ": " + msg, Fields: []FieldError{{Field: field, Message: msg}}}
}

// CodeOf returns the domain code of err, or "" when err is not a domain error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
