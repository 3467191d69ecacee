package app

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"callsig/calls"
	"callsig/db"
	"callsig/db/sqlite"
	"callsig/handlers"
	"callsig/sse"
	"callsig/webhooks"
)

// Every port the application wires the store into, proven at compile time
// for the union db.Store and for each backend.
var (
	_ calls.Store               = db.Store(nil)
	_ webhooks.Store            = db.Store(nil)
	_ sse.Log                   = db.Store(nil)
	_ handlers.IdempotencyStore = db.Store(nil)
	_ db.Store                  = (*sqlite.Store)(nil)
)

// errPostgresNotBuilt refuses a PostgreSQL DSN until that backend exists
// (issue 10): a clear startup error rather than a SQLite file named after
// the URL.
var errPostgresNotBuilt = errors.New("db: PostgreSQL backend not built yet: set CALLSIG_DB to a SQLite file path")

// checkBackend says whether dsn names a backend this build has: a
// postgres:// or postgresql:// URL selects PostgreSQL, anything else is the
// path of a SQLite file. The error never repeats the DSN, which may hold a
// password.
func checkBackend(dsn string) error {
	if isPostgresDSN(dsn) {
		return errPostgresNotBuilt
	}
	return nil
}

func isPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openStore opens the backend cfg.DB names (see checkBackend).
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (db.Store, error) {
	if err := checkBackend(cfg.DB); err != nil {
		return nil, err
	}
	s, err := sqlite.Open(ctx, cfg.DB, sqlite.Options{Synchronous: cfg.Synchronous, Logger: log})
	if err != nil {
		return nil, err
	}
	return s, nil
}
