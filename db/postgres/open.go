package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// The ports this store implements, proven at compile time: db.Store
// embeds calls.Store and webhooks.Store.
var _ db.Store = (*Store)(nil)

// Options configures Open; the zero value suits a 2-core node.
type Options struct {
	// MaxConns caps the connection pool (default 8): every Update holds
	// one connection for its transaction.
	MaxConns int
	// StatementTimeout bounds each statement on the server (default 10 s),
	// so a stuck query fails (503) instead of holding a connection.
	StatementTimeout time.Duration
	// Logger receives migration notices (default: discarded).
	Logger *slog.Logger
	// EventUsersSweepEvery is how often pruning the events also walks
	// event_users for the rows of users with no event left (default an
	// hour: the events are pruned every minute, on every node).
	EventUsersSweepEvery time.Duration
}

// Store is the PostgreSQL implementation of db.Store. It is safe for
// concurrent use, and several processes may share one database.
type Store struct {
	// The webhook endpoints and outbox over this store's transactions
	// (set by Open).
	db.Webhooks
	// The event log's reads, over the pool (set by Open).
	db.EventLog

	db       *sqlx.DB
	maxConns int           // the pool's size (Options.MaxConns)
	txBound  time.Duration // how long a write transaction may take (writeContext)
	log      *slog.Logger
	closed   atomic.Bool

	closeOnce sync.Once
	closeErr  error

	// usersSwept is when PruneEvents last walked event_users (Unix ns, 0:
	// not yet); it does once every usersSweepEvery.
	usersSwept      atomic.Int64
	usersSweepEvery time.Duration
}

// migrationFiles are PostgreSQL's schema changes, applied once each in
// version order by db.Migrate. A released file is never edited.
//
// The events table's oid is part of the database's identity (identity.go,
// migration 0014). A rewrite keeps it (ALTER TABLE … TYPE, VACUUM FULL,
// CLUSTER), a new table does not: a migration that replaces events (a
// table created, filled, the old one dropped and the new renamed) would
// have every node take the database for a restore, a jump of the ids and
// a reset of the clients holding ids being written then. Such a migration
// records the new oid itself, where the row holds the old one:
//
//	DO $$ DECLARE old bigint := 'events'::regclass::oid; BEGIN
//		-- … replace events …
//		UPDATE database_identity SET events_oid = 'events'::regclass::oid WHERE events_oid = old;
//	END $$;
//
// (only where it held the old one: a dump restored before the migration
// keeps the dump's row, and must still be told apart).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// openPool connects a pool of maxConns sessions to the database named by
// dsn, each committing synchronously (an Update answers only once its
// commit is durable, whatever the server's default) and bounding every
// statement by timeout, and checks that the server answers. quiet counts a
// server silent for answerBound dead (quietConn): every pool but the
// migrations' session, whose scripts run several statements in one query
// that answers only at its end. what names the pool in the error ("" for
// the store's).
func openPool(ctx context.Context, dsn string, maxConns int, timeout time.Duration, quiet bool, what string, opts ...stdlib.OptionOpenDB) (*sqlx.DB, error) {
	cfg, err := sessionConfig(dsn, setting{"statement_timeout", strconv.FormatInt(timeout.Milliseconds(), 10)})
	if err != nil {
		return nil, err
	}
	if quiet {
		cfg.DialFunc = dialQuiet(cfg.DialFunc, answerBound(timeout))
	}
	return connect(ctx, cfg, maxConns, what, opts...)
}

// sessionConfig parses dsn into the settings every session of the store
// shares, committing synchronously, with more, and sets them on each
// session as it connects (setOnConnect).
func sessionConfig(dsn string, more ...setting) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message never repeats the password.
		return nil, fmt.Errorf("db: postgres dsn: %w", err)
	}
	cfg.DialFunc = dialer(cfg.ConnectTimeout).DialContext
	setOnConnect(cfg, append([]setting{{"synchronous_commit", "on"}}, more...))
	return cfg, nil
}

// connect opens a pool of maxConns sessions with cfg and opts and checks
// that the server answers.
func connect(ctx context.Context, cfg *pgx.ConnConfig, maxConns int, what string, opts ...stdlib.OptionOpenDB) (*sqlx.DB, error) {
	sdb := sqlx.NewDb(stdlib.OpenDB(*cfg, opts...), "pgx")
	sdb.SetMaxOpenConns(maxConns)
	sdb.SetMaxIdleConns(maxConns)
	sdb.SetConnMaxIdleTime(5 * time.Minute)
	if err := sdb.PingContext(ctx); err != nil {
		sdb.Close()
		return nil, unavailable(fmt.Errorf("db: connect %sto postgres %s/%s: %w", what, cfg.Host, cfg.Database, err))
	}
	return sdb, nil
}

// Open connects to the database named by dsn (a postgres:// URL or a
// key=value string), applies the pending migrations and returns the store.
// The pool goes through pgx's database/sql driver with sqlx (see doc.go).
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	if opts.EventUsersSweepEvery <= 0 {
		opts.EventUsersSweepEvery = time.Hour
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	list, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	// Before anything runs through a pooler that would mix the sessions.
	if err := checkPooling(ctx, dsn); err != nil {
		return nil, err
	}
	if err := migrate(ctx, dsn, opts.StatementTimeout, list, log); err != nil {
		return nil, err
	}
	// Every session checks the database's identity before it serves
	// (identity.go); the first, the ping, settles it. A session of a
	// standby is checked again as it is reused (reset).
	ids := &identityCheck{log: log, now: time.Now}
	sdb, err := openPool(ctx, dsn, opts.MaxConns, opts.StatementTimeout, true, "", stdlib.OptionAfterConnect(ids.check), stdlib.OptionResetSession(ids.reset))
	if err != nil {
		return nil, err
	}
	warmPool(ctx, sdb, min(max(opts.MaxConns/2, 1), warmConns), log)
	s := &Store{db: sdb, maxConns: opts.MaxConns, log: log, txBound: answerBound(opts.StatementTimeout), usersSweepEvery: opts.EventUsersSweepEvery}
	s.Webhooks = db.NewWebhooks(webhookSQL, s.inTxRetrying, s.read)
	s.EventLog = s.eventLog()
	if err := ids.attach(s.EventLog); err != nil {
		sdb.Close()
		return nil, err
	}
	return s, nil
}

// migrate brings the schema up to date on a session of its own: a
// migration is a script of several statements sent as one query, and
// PostgreSQL answers it only once all have run, together for longer than
// a pool session waits for a silent server (quietConn). Its statements
// have no time bound either: an index built or a column filled over a
// large table takes as long as it takes, and under the store's statement
// timeout (5 s by default) such an upgrade failed at every start (found
// by review, 300,000 calls). What is bounded, by timeout, is a wait for a
// lock (lock_timeout): a migration queued behind a long transaction
// would otherwise hold up every query queued behind it in turn.
func migrate(ctx context.Context, dsn string, timeout time.Duration, list []db.Migration, log *slog.Logger) error {
	settings := []setting{{"statement_timeout", "0"}, {"lock_timeout", strconv.FormatInt(timeout.Milliseconds(), 10)}}
	cfg, err := sessionConfig(dsn, settings...)
	if err != nil {
		return err
	}
	mdb, err := connect(ctx, cfg, 1, "the migration session ")
	if err != nil {
		return err
	}
	defer mdb.Close()
	return db.Migrate(ctx, migrator{db: mdb, log: log, settings: setSQL(settings)}, list, log)
}

// warmConns is how many sessions Open opens ahead of the first requests.
// Opened on demand, the first burst after a start waits for PostgreSQL to
// fork a backend per session: on a loaded 2-core box every request over
// 40 ms of a 3-node run came in its first half second (docs/benchmarks.md,
// "The cross-node tail at 50 cycles/s"). Four, not the whole pool: the
// rest open as load needs them, and many nodes (or test apps) share
// max_connections; of a small pool, half.
const warmConns = 4

// warmPool opens n sessions at once and returns them to the pool idle.
// Best effort: the pool has answered a ping and migrated already, and a
// session that fails to open now will be opened on demand.
func warmPool(ctx context.Context, sdb *sqlx.DB, n int, log *slog.Logger) {
	conns := make([]*sql.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := sdb.Conn(ctx)
			if err != nil {
				log.Debug("postgres pool warm-up", "err", err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			_ = c.Close() // back to the pool, open
		}
	}
}

// Ping checks that the database answers a transaction and takes writes
// (/readyz): a server that turned into a read-only standby (after a
// failover) is unavailable, not ready.
func (s *Store) Ping(ctx context.Context) error {
	// A read, bound to ctx: /readyz answers within its own bound, even
	// while the pool's connections wait on a silent path.
	return s.read(ctx, func(tx *sqlx.Tx) error {
		var standby bool
		if err := tx.QueryRowContext(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
			return err
		}
		if standby {
			return fmt.Errorf("db: postgres is a read-only standby: %w", calls.ErrUnavailable)
		}
		return nil
	})
}

// Close closes the pool, waiting for the statements running; later calls
// fail with db.ErrClosed. Closing twice is harmless.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// errNoRows reports whether err is the empty result of a single-row query.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Pools returns the store's connection pool by name, for its metrics
// (go_sql_* on /metrics: open, in use, waits); not for queries.
func (s *Store) Pools() map[string]*sql.DB { return map[string]*sql.DB{"postgres": s.db.DB} }
