package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"callsig/calls"
)

// What PostgreSQL answers with a "not now" is 503 with Retry-After (the
// error wraps calls.ErrUnavailable); a fault of the request or the schema
// stays what it is.
func TestUnavailableServerErrors(t *testing.T) {
	for _, tc := range []struct {
		severity, code, what string
		want                 bool
	}{
		{"ERROR", "08006", "connection failure", true},
		{"ERROR", "40001", "serialization failure", true},
		{"ERROR", "40P01", "deadlock", true},
		{"ERROR", "53100", "disk full", true},
		{"ERROR", "53200", "out of memory", true},
		{"ERROR", "53300", "too many connections", true},
		{"ERROR", "55P03", "lock not available", true},
		{"ERROR", "57014", "statement timeout", true},
		{"ERROR", "57P01", "admin shutdown", true},
		{"ERROR", "58030", "I/O error", true},
		{"ERROR", "25006", "read-only transaction (a standby)", true},
		// The codes of a session PostgreSQL ends (sent as FATAL) are
		// listed, so each is 503 even under another severity.
		{"ERROR", "57P04", "database dropped", true},
		{"ERROR", "57P05", "idle session timeout", true},
		{"ERROR", "25P03", "idle-in-transaction timeout", true},
		{"ERROR", "25P04", "transaction timeout (PostgreSQL 17)", true},
		// And any session PostgreSQL ended, whatever its code: a FATAL
		// code not listed (a password changed under the pool), a PANIC.
		{"FATAL", "28P01", "invalid password", true},
		{"PANIC", "XX000", "internal error", true},
		{"ERROR", "XX000", "internal error", false},
		{"ERROR", "23505", "unique violation", false},
		{"ERROR", "42P01", "undefined table", false},
		{"ERROR", "22P02", "invalid text representation", false},
	} {
		pe := &pgconn.PgError{Severity: tc.severity, SeverityUnlocalized: tc.severity, Code: tc.code, Message: tc.what}
		err := unavailable(fmt.Errorf("db: save: %w", pe))
		if got := errors.Is(err, calls.ErrUnavailable); got != tc.want {
			t.Errorf("%s %s (%s): unavailable = %v, want %v", tc.severity, tc.code, tc.what, got, tc.want)
		}
	}
}
