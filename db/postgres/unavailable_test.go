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
		code, what string
		want       bool
	}{
		{"08006", "connection failure", true},
		{"40001", "serialization failure", true},
		{"40P01", "deadlock", true},
		{"53100", "disk full", true},
		{"53200", "out of memory", true},
		{"53300", "too many connections", true},
		{"55P03", "lock not available", true},
		{"57014", "statement timeout", true},
		{"57P01", "admin shutdown", true},
		{"58030", "I/O error", true},
		{"25006", "read-only transaction (a standby)", true},
		{"23505", "unique violation", false},
		{"42P01", "undefined table", false},
		{"22P02", "invalid text representation", false},
	} {
		err := unavailable(fmt.Errorf("db: save: %w", &pgconn.PgError{Code: tc.code, Message: tc.what}))
		if got := errors.Is(err, calls.ErrUnavailable); got != tc.want {
			t.Errorf("%s (%s): unavailable = %v, want %v", tc.code, tc.what, got, tc.want)
		}
	}
}
