package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// setting is a run-time parameter the store sets on a session of its own
// (synchronous_commit, statement_timeout, lock_timeout).
type setting struct{ name, value string }

// setOnConnect makes every session of cfg set settings as it connects,
// with one SET query, before anything else runs on it, rather than send
// them as startup parameters. A connection pooler in front of PostgreSQL
// refuses startup parameters it does not know: PgBouncer's default
// answers "unsupported startup parameter: synchronous_commit" and no node
// started. Its way around, ignore_startup_parameters, drops them instead
// of passing them on, so the sessions would commit as the server's
// default says (found: synchronous_commit off for a database set so, with
// the store asking for on) and statements would run unbounded. A SET
// reaches the server as any query does. It costs a round trip when a
// session opens, none on a request. Behind PgBouncer this holds only in
// session pooling mode, which checkPooling makes sure of.
func setOnConnect(cfg *pgx.ConnConfig, settings []setting) {
	if len(settings) == 0 {
		return
	}
	set := setSQL(settings)
	next := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if _, err := pc.Exec(ctx, set).ReadAll(); err != nil {
			return fmt.Errorf("db: postgres session settings (%s): %w", set, err)
		}
		if next != nil {
			return next(ctx, pc)
		}
		return nil
	}
}

// setSQL is one query of SET statements that set settings, in order. The
// names and values are the store's own, never a user's; a value is
// quoted all the same.
func setSQL(settings []setting) string {
	var b strings.Builder
	for i, s := range settings {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "SET %s = '%s'", s.name, strings.ReplaceAll(s.value, "'", "''"))
	}
	return b.String()
}
