package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The store needs a server session per connection: its settings are set
// once as a session connects (settings.go), its statements are prepared
// once per session (pgx's statement cache), the identity check reads a
// session's server once, as it connects, and keeps an eye on that one
// session while it is a standby's (identity.go), and a migration run
// outside a transaction holds its lock as a session lock across several
// statements (migrate.go). A connection pooler in transaction or
// statement mode (PgBouncer's pool_mode = transaction) hands each
// transaction, or each statement, of one connection to whichever server
// session is free: the settings would land on one session and leave the
// others as the server's defaults say (asynchronous commit, no statement
// timeout), the prepared statements are missing on the others (the node
// stopped at start: prepared statement "stmtcache_…" does not exist),
// the identity checked would be some other session's, and the migration
// lock would be held by a session that runs none of the migration's
// statements. So a pooler must run in session mode (docs/cluster.md,
// "Behind PgBouncer"), and checkPooling refuses one that does not.

// poolingRounds is how many times checkPooling looks. One suffices on a
// pooler no one else uses; under other clients' load a free server
// session may be taken between two looks.
const poolingRounds = 3

// poolingBound bounds the whole check.
const poolingBound = 30 * time.Second

// checkPooling returns an error when two connections to dsn do not keep a
// server session each. It looks, on connections a and b, for what a
// pooler in transaction mode does with its free server sessions and a
// server never does: b's session handed to a's transaction once b's
// statement ended, or b's statements run on two sessions.
func checkPooling(ctx context.Context, dsn string) error {
	cfg, err := sessionConfig(dsn)
	if err != nil {
		return err
	}
	// Nothing prepared: a pooler in transaction mode would fail that
	// first, with an error that does not say why.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(ctx, poolingBound)
	defer cancel()
	fail := func(err error) error {
		return unavailable(fmt.Errorf("db: check that each connection to postgres %s/%s is a session of its own: %w", cfg.Host, cfg.Database, err))
	}
	var conns [2]*pgx.Conn
	for i := range conns {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return unavailable(fmt.Errorf("db: connect to postgres %s/%s: %w", cfg.Host, cfg.Database, err))
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	a, b := conns[0], conns[1]
	pid := func(c *pgx.Conn) (p int32, err error) {
		err = c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&p)
		return p, err
	}
	for range poolingRounds {
		bFirst, err := pid(b)
		if err != nil {
			return fail(err)
		}
		if _, err := a.Exec(ctx, "BEGIN"); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "08P01" {
				// PgBouncer in statement mode: "transaction blocks not
				// allowed in statement pooling mode". Not a failure a
				// retry mends.
				return fmt.Errorf("db: postgres %s:%d/%s refused a transaction (%w): a connection pooler in statement mode? set pool_mode = session for its database (docs/cluster.md, \"Behind PgBouncer\")", cfg.Host, cfg.Port, cfg.Database, err)
			}
			return fail(err)
		}
		aInTx, err := pid(a)
		if err != nil {
			return fail(err)
		}
		if aInTx == bFirst {
			return pooled(cfg, bFirst, aInTx, "another connection's transaction")
		}
		bThen, err := pid(b)
		if err != nil {
			return fail(err)
		}
		if _, err := a.Exec(ctx, "COMMIT"); err != nil {
			return fail(err)
		}
		if bThen != bFirst {
			return pooled(cfg, bFirst, bThen, "its next statement")
		}
	}
	return nil
}

// pooled is checkPooling's refusal: a statement of one connection ran on
// server process first, and what (a later statement) on then.
func pooled(cfg *pgx.ConnConfig, first, then int32, what string) error {
	return fmt.Errorf("db: postgres %s:%d/%s hands a connection's statements to several server sessions (a statement on server process %d, then %s on %d): a connection pooler in transaction or statement mode is in front of it (PgBouncer pool_mode = transaction). callsig needs a session per connection (its settings, prepared statements, identity check and migration lock are a session's): set pool_mode = session for its database (docs/cluster.md, \"Behind PgBouncer\")",
		cfg.Host, cfg.Port, cfg.Database, first, what, then)
}
