package app

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// A PostgreSQL DSN is refused at startup with a clear error until that
// backend is built, never taken for a SQLite file name, and the error does
// not repeat the password.
func TestPostgresDSNIsAStartupError(t *testing.T) {
	for _, dsn := range []string{"postgres://callsig:s3cret@127.0.0.1:5432/callsig", "postgresql://localhost/callsig?sslmode=disable"} {
		cfg, err := ParseConfig("test", []string{"-db", dsn, "-jwt-secret", strings.Repeat("k", 32)}, func(string) string { return "" }, nil)
		if err != nil {
			t.Fatalf("ParseConfig(-db %s): %v", dsn, err)
		}
		a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			a.Close()
			t.Fatalf("New with %s succeeded, want a startup error", dsn)
		}
		if !errors.Is(err, errPostgresNotBuilt) || !strings.Contains(err.Error(), "PostgreSQL backend not built yet") {
			t.Errorf("New with %s: %v, want the PostgreSQL-not-built error", dsn, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the startup error shows the password: %v", err)
		}
	}
}
