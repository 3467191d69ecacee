package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// migrationLock is the advisory lock key that serializes migrations of
// processes opening the same database at once ("callsig" in ASCII).
const migrationLock = 0x63616c6c736967

// lockPoll is how often a process waiting for another's migration tries
// the lock again.
const lockPoll = 100 * time.Millisecond

// noTransaction is the first line of a migration that runs outside a
// transaction, one statement at a time: CREATE or DROP INDEX
// CONCURRENTLY, which cannot run in one, and which a rolling upgrade
// needs so that building an index over a large table does not hold
// every write to it for as long as the build takes (a plain CREATE INDEX
// locks out INSERT, UPDATE and DELETE). Such a migration is rerun from
// its start if it fails or its process dies before its version is
// recorded, so each of its statements must be idempotent, and a CREATE
// INDEX CONCURRENTLY is preceded by a DROP INDEX CONCURRENTLY IF EXISTS
// of the same name: a build that failed leaves an invalid index that IF
// NOT EXISTS would keep. Its statements end with ";" at the end of a
// line; lines starting with "--" are comments.
const noTransaction = "-- callsig:no-transaction"

// migrator is the db.Migrator of a PostgreSQL database: the applied
// versions are rows of schema_migrations, each written in its migration's
// transaction (or, for a migration run outside one, once all of it ran).
//
// The lock is taken by polling, never by waiting in PostgreSQL: a CREATE
// INDEX CONCURRENTLY waits for every transaction whose snapshot predates
// it, and a process blocked in pg_advisory_lock holds one, waiting in
// turn for the lock the building session holds. PostgreSQL would break
// that deadlock by failing one of the two.
type migrator struct {
	db  *sqlx.DB
	log *slog.Logger
	// settings sets the session's own timeouts again (setSQL): they were
	// set as it connected, not at its start, so RESET would not restore
	// them but the server's defaults.
	settings string
}

func (m migrator) Version(ctx context.Context) (int, error) {
	err := m.inLock(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at BIGINT  NOT NULL
		)`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := m.db.GetContext(ctx, &current, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); err != nil {
		return 0, err
	}
	return current, nil
}

func (m migrator) Apply(ctx context.Context, mig db.Migration) (bool, error) {
	if strings.HasPrefix(mig.SQL, noTransaction) {
		return m.applyOutsideTxRetrying(ctx, mig)
	}
	applied := false
	err := m.inLock(ctx, func(tx *sqlx.Tx) error {
		// Checked again under the lock: another process may have applied it.
		if done, err := isApplied(ctx, tx, mig.Version); err != nil || done {
			return err
		}
		if _, err := tx.ExecContext(ctx, mig.SQL); err != nil {
			return err
		}
		if err := record(ctx, tx, mig.Version); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied && err == nil, err
}

// deadlockRetries is how many times a migration run outside a transaction
// is run again after PostgreSQL failed it to break a deadlock.
const deadlockRetries = 5

// applyOutsideTxRetrying is applyOutsideTx, run again when PostgreSQL
// broke a deadlock by failing it. A node of a version before polling for
// the lock (before 0009) that starts while an index builds waits for the
// lock inside a transaction, holding a snapshot the build waits for:
// PostgreSQL then fails one of the two. If it fails the build, the build
// runs again once the lock is free (that node, finding the schema newer
// than its own, refuses to start either way).
func (m migrator) applyOutsideTxRetrying(ctx context.Context, mig db.Migration) (bool, error) {
	for attempt := 0; ; attempt++ {
		applied, err := m.applyOutsideTx(ctx, mig)
		var pe *pgconn.PgError
		if err == nil || attempt == deadlockRetries || !errors.As(err, &pe) || pe.Code != "40P01" {
			return applied, err
		}
		m.log.Warn("database migration failed to break a deadlock; running it again", "name", mig.Name, "err", err)
		if err := sleep(ctx, lockPoll); err != nil {
			return false, err
		}
	}
}

// applyOutsideTx runs a migration marked noTransaction on one session,
// holding the migration lock as a session lock, each statement on its
// own and with no statement timeout (an index build over a large table
// takes what it takes), then records its version.
func (m migrator) applyOutsideTx(ctx context.Context, mig db.Migration) (applied bool, err error) {
	conn, err := m.db.Connx(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	err = m.untilLocked(ctx, func() (got bool, err error) {
		err = conn.GetContext(ctx, &got, `SELECT pg_try_advisory_lock($1)`, int64(migrationLock))
		return got, err
	})
	if err != nil {
		return false, err
	}
	defer func() {
		// A session lock and setting outlive a failed statement: undone
		// even then, with a context of their own (ctx may be why it
		// failed), bounded (the path may be silent). If they fail, the
		// session is broken, and its end ends both.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.ExecContext(uctx, m.settings)
		_, _ = conn.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	}()
	if done, err := isApplied(ctx, conn, mig.Version); err != nil || done {
		return false, err
	}
	list, err := statements(mig.SQL)
	if err != nil {
		return false, err
	}
	m.log.Info("database migration: running outside a transaction (an index built CONCURRENTLY: writes go on meanwhile, and it may take long on a large table)", "name", mig.Name)
	// Nor a lock wait bound: CREATE INDEX CONCURRENTLY waits for every
	// transaction older than it, as long as they run, and holds no lock
	// that queues others meanwhile.
	if _, err := conn.ExecContext(ctx, `SET statement_timeout = 0; SET lock_timeout = 0`); err != nil {
		return false, err
	}
	for i, stmt := range list {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("statement %d (run outside a transaction; the next start runs them all again): %w", i+1, err)
		}
	}
	if err := record(ctx, conn, mig.Version); err != nil {
		return false, err
	}
	return true, nil
}

// statements splits a noTransaction migration into its statements. A
// line with text after a ";" is refused: sent with the next statement as
// one query, it would run both in a transaction block, which CONCURRENTLY
// refuses.
func statements(script string) ([]string, error) {
	var list []string
	var cur strings.Builder
	for n, line := range strings.Split(script, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		if i := strings.Index(trimmed, ";"); i >= 0 && i < len(trimmed)-1 {
			return nil, fmt.Errorf("line %d: text after \";\" (a statement outside a transaction ends its line)", n+1)
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(trimmed, ";") {
			list = append(list, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		list = append(list, rest)
	}
	return list, nil
}

// isApplied reports whether version is recorded.
func isApplied(ctx context.Context, q sqlx.QueryerContext, version int) (bool, error) {
	var done int
	if err := sqlx.GetContext(ctx, q, &done, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, version); err != nil {
		return false, err
	}
	return done > 0, nil
}

// record records version as applied.
func record(ctx context.Context, q sqlx.ExecerContext, version int) error {
	_, err := q.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
		version, time.Now().UnixMilli())
	return err
}

// inLock runs fn in a transaction holding the migration lock, taken by
// polling (see migrator): a transaction that did not get it ends, so
// holds no snapshot while it waits.
func (m migrator) inLock(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	var tx *sqlx.Tx
	err := m.untilLocked(ctx, func() (got bool, err error) {
		if tx, err = m.db.BeginTxx(ctx, nil); err != nil {
			return false, err
		}
		if err = tx.GetContext(ctx, &got, `SELECT pg_try_advisory_xact_lock($1)`, int64(migrationLock)); err != nil || !got {
			_ = tx.Rollback()
		}
		return got, err
	})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// untilLocked calls try until it takes the migration lock, lockPoll
// apart, saying so in the log the first time it has to wait: a node
// starting behind another's long migration (an index build) would
// otherwise wait in silence.
func (m migrator) untilLocked(ctx context.Context, try func() (bool, error)) error {
	for waited := false; ; waited = true {
		got, err := try()
		if err != nil || got {
			return err
		}
		if !waited {
			m.log.Info("database migration: waiting for another process's migration to end")
		}
		if err := sleep(ctx, lockPoll); err != nil {
			return err
		}
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
