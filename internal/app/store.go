package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"callsig/calls"
	"callsig/db"
	"callsig/db/postgres"
	"callsig/db/sqlite"
	"callsig/handlers"
	"callsig/internal/redact"
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
	_ db.Store                  = (*postgres.Store)(nil)
)

// IsPostgresDSN says whether dsn selects PostgreSQL (cluster mode): a
// postgres:// or postgresql:// URL. Anything else is the path of a SQLite
// file.
func IsPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openStore opens the backend cfg.DB names (see IsPostgresDSN) and logs
// which one it is: with PostgreSQL the host and database, never the
// password.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (db.Store, error) {
	if !IsPostgresDSN(cfg.DB) {
		s, err := sqlite.Open(ctx, cfg.DB, sqlite.Options{Synchronous: cfg.Synchronous, Logger: log})
		if err != nil {
			return nil, err
		}
		log.Info("store open", "backend", "sqlite", "path", cfg.DB, "synchronous", strings.ToUpper(cfg.Synchronous))
		return s, nil
	}
	host, database := describePostgres(cfg.DB)
	s, err := postgres.Open(ctx, cfg.DB, postgres.Options{MaxConns: cfg.PGMaxConns, StatementTimeout: cfg.PGStatementTimeout, Logger: log})
	if err != nil {
		if errors.Is(err, calls.ErrUnavailable) {
			// Its text speaks to an HTTP client ("overloaded, busy or
			// shutting down; retry later"), not to an operator whose
			// database is out of reach: the cause follows it.
			err = errors.New(strings.Replace(err.Error(), calls.ErrUnavailable.Error()+": ", "cannot reach it: ", 1))
		}
		// pgx errors may quote the connection string; say where, not how.
		return nil, fmt.Errorf("open PostgreSQL database %q on %s: %w", database, host, redactDSN(err, cfg.DB))
	}
	log.Info("store open", "backend", "postgres", "host", host, "database", database, "pool", cfg.PGMaxConns, "statement_timeout", cfg.PGStatementTimeout)
	return s, nil
}

// describePostgres returns the host and database a postgres:// URL names.
func describePostgres(dsn string) (host, database string) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "?", "?"
	}
	host, database = u.Host, strings.TrimPrefix(u.Path, "/")
	if host == "" {
		host = "localhost"
	}
	return host, database
}

// RedactedDB is what may be logged of the CALLSIG_DB setting: a SQLite
// path as it is, a PostgreSQL URL with its password replaced by xxxxx,
// whether in user:password@ or in the query (?password=, which pgx takes).
func RedactedDB(dsn string) string {
	if !IsPostgresDSN(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://?" // unparsable: it may hold a password anywhere
	}
	return redact.RedactedURL(u)
}

// redactDSN keeps a password in dsn out of err's text.
func redactDSN(err error, dsn string) error { return redact.Err(err, dsn) }
