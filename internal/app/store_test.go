package app

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A PostgreSQL DSN is refused at startup with a clear error until that
// backend is built, never taken for a SQLite file name (nor for the place
// of a development secret), and the error does not repeat the password.
// Refused by the configuration (cmd/api serve and token) and by New for a
// Config built by hand.
func TestPostgresDSNIsAStartupError(t *testing.T) {
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, errPostgresNotBuilt) || !strings.Contains(err.Error(), "PostgreSQL backend not built yet") {
			t.Errorf("%s: %v, want the PostgreSQL-not-built error", what, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the password: %v", what, err)
		}
	}
	for _, dsn := range []string{"postgres://callsig:s3cret@127.0.0.1:5432/callsig", "postgresql://localhost/callsig?sslmode=disable"} {
		_, err := ParseConfig("test", []string{"-db", dsn}, func(string) string { return "" }, nil)
		check("ParseConfig -db "+dsn, err)

		dir := t.TempDir()
		t.Chdir(dir) // where a secret named after the relative "path" would land
		cfg, err := ParseConfig("test", []string{"-db", filepath.Join(dir, "callsig.db")}, func(string) string { return "" }, nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.DB = dsn // development mode: no secret configured
		a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			a.Close()
		}
		check("New with "+dsn, err)
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("New with %s created %v", dsn, entries)
		}
	}
}
