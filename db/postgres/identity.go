package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// A database restored from a backup (pg_restore of a dump, a
// point-in-time recovery, a base backup), copied, or taken over by a
// replica that had not received every commit, holds the event log up to
// some id, while the lost database may have given ids past it, which
// clients hold. Its event_ids sequence goes on from where the copy was
// made, so it would give those ids again, to other events: a client
// resuming from one would silently skip the restored log's events below
// it (SQLite's backups have the same problem, solved by the mark
// `callsig backup` writes; see db.RestoreMarkType).
//
// PostgreSQL tells such a database apart by its identity: the system
// identifier (new with every initdb, so with pg_upgrade and a logical
// copy to a new server), the database's oid (new with every CREATE
// DATABASE, so with a dump restored into a new database or a TEMPLATE
// copy), the WAL timeline (new at the end of every archive recovery: a
// point-in-time restore, a promoted replica) and the events table's oid
// (new when a dump is restored into the database it was taken from,
// pg_restore --clean, whose database_identity row is the dump's).
// database_identity holds the identity the nodes last served. Every session of the store's pool
// compares the identity it finds with the one its process knows as it
// connects, before any statement of the store runs on it. The first
// session of a process, and one that finds another identity, settles it
// in a transaction under an advisory lock: a row of another identity
// means the database changed under it, and the session writes a restore
// mark (db.CopyMark) and moves event_ids past it, so that no id is given
// twice and a client holding one of the gap's is reset (db.EventLog's
// NeverGiven, whose marks are set from the same transaction).
//
// A false alarm (a replica promoted with every commit, PostgreSQL
// upgraded with pg_upgrade) costs a jump of the ids and nothing else: no
// client holds an id in the gap. What this does not see: a copy of the
// data directory restored as it was (a file-system snapshot, recovered
// as after a crash, keeps every part), and a database restored under
// running nodes whose sessions outlive it (none do across a restart of
// the server or a database dropped and created again; all do when a dump
// is restored into the same database, pg_restore --clean).

// identityLock is the advisory lock key of identity checks ("callsig:"
// in ASCII).
const identityLock = 0x63616c6c7369673a

// identity is what tells a database from its copies. A part this role
// may not read (a managed service's restriction) is null, and ignored.
// events is the events table's oid (pg_class): a dump restored into the
// database it was taken from (pg_restore --clean) keeps the other three,
// and the dump's database_identity row names them, but it creates the
// table anew. VACUUM FULL, CLUSTER and TRUNCATE keep it.
type identity struct {
	system, oid, timeline, events sql.NullInt64
}

// matches reports whether a and b may be the same database: every part
// both know is equal.
func (a identity) matches(b identity) bool {
	same := func(x, y sql.NullInt64) bool { return !x.Valid || !y.Valid || x.Int64 == y.Int64 }
	return same(a.system, b.system) && same(a.oid, b.oid) && same(a.timeline, b.timeline) && same(a.events, b.events)
}

func (a identity) String() string {
	part := func(v sql.NullInt64) string {
		if !v.Valid {
			return "unknown"
		}
		return fmt.Sprint(v.Int64)
	}
	return fmt.Sprintf("system %s, database oid %s, timeline %s, events table oid %s", part(a.system), part(a.oid), part(a.timeline), part(a.events))
}

// identityParts read the parts of a session's identity. The timeline is
// that of the WAL being written (pg_current_wal_lsn): the last
// checkpoint's (pg_control_checkpoint) names the old one until the first
// checkpoint after a promotion.
var identityParts = []string{
	`SELECT system_identifier FROM pg_control_system()`,
	`SELECT oid::bigint FROM pg_database WHERE datname = current_database()`,
	`SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`,
	`SELECT 'events'::regclass::oid::bigint`,
}

// readIdentity reads conn's identity: in one round trip when every part
// may be read, else part by part, a part that fails left unknown.
func readIdentity(ctx context.Context, conn *pgx.Conn) (identity, error) {
	var id identity
	dst := []*sql.NullInt64{&id.system, &id.oid, &id.timeline, &id.events}
	all := "SELECT (" + identityParts[0] + "), (" + identityParts[1] + "), (" + identityParts[2] + "), (" + identityParts[3] + ")"
	err := conn.QueryRow(ctx, all).Scan(dst[0], dst[1], dst[2], dst[3])
	if err == nil {
		return id, nil
	}
	if ctx.Err() != nil || conn.IsClosed() {
		return identity{}, err
	}
	for i, q := range identityParts {
		if err := conn.QueryRow(ctx, q).Scan(dst[i]); err != nil {
			if ctx.Err() != nil || conn.IsClosed() {
				return identity{}, err
			}
			*dst[i] = sql.NullInt64{}
		}
	}
	return id, nil
}

// identityCheck is a process's view of its database's identity, which
// every new session of the store's pool is checked against (check).
type identityCheck struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	known   *identity                    // nil until the first session settled it
	marks   []db.RestoreMark             // the log's restore marks as last read
	restore func([]db.RestoreMark) error // the store's log, once attached
}

// check runs as a session of the store's pool connects: a session that
// finds the identity its process knows is ready at once; any other
// settles the identity first (settle). An error closes the session, so
// no write runs on a database whose identity was not settled.
func (c *identityCheck) check(ctx context.Context, conn *pgx.Conn) error {
	cur, err := readIdentity(ctx, conn)
	if err != nil {
		return fmt.Errorf("db: read the database's identity: %w", err)
	}
	if !cur.timeline.Valid {
		// A standby's timeline cannot be read, and it matches any. It
		// cannot write either, until it is promoted, which starts a new
		// timeline and leaves this session open: reset checks it again.
		var standby bool
		if err := conn.QueryRow(ctx, inRecoverySQL).Scan(&standby); err != nil {
			return fmt.Errorf("db: read the database's identity: %w", err)
		}
		if standby {
			conn.PgConn().CustomData()[standbyKey] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known != nil && c.known.matches(cur) {
		return nil
	}
	marks, err := c.settle(ctx, conn, cur)
	if err != nil {
		return err
	}
	if c.restore != nil {
		if err := c.restore(marks); err != nil {
			return err
		}
	}
	c.known, c.marks = &cur, marks
	return nil
}

// standbyKey marks, in its custom data, a session that connected to a
// server in recovery (a standby): check could not read its timeline.
const standbyKey = "callsig.identity.standby"

// inRecoverySQL tells a standby (a variable for tests, which have none).
var inRecoverySQL = `SELECT pg_is_in_recovery()`

// reset runs as the pool hands out a session it handed out before. A
// session that connected to a standby passed check whatever its timeline:
// once the standby is promoted (a failover behind a proxy or a multi-host
// DSN that reached it first), the same session could write, with
// event_ids where the standby had them, before any session saw the new
// timeline and moved them on past a restore mark. So it is dropped as
// soon as its server is out of recovery, and the pool opens one that
// check settles (found with a real standby behind PgBouncer: the session
// wrote id 2, which the lost primary had given, and no mark came). A
// promotion between this and the session's next BEGIN is not seen.
func (c *identityCheck) reset(ctx context.Context, conn *pgx.Conn) error {
	if conn.PgConn().CustomData()[standbyKey] == nil {
		return nil
	}
	var standby bool
	if err := conn.QueryRow(ctx, inRecoverySQL).Scan(&standby); err != nil || !standby {
		return driver.ErrBadConn
	}
	return nil
}

// attach sets the restore marks read so far on the store's log, and any
// read later as they are.
func (c *identityCheck) attach(log db.EventLog) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.restore = log.SetRestores
	return log.SetRestores(c.marks)
}

// settle records cur as the database's identity when none is, writes a
// restore mark when another is, and returns the log's restore marks.
func (c *identityCheck) settle(ctx context.Context, conn *pgx.Conn, cur identity) ([]db.RestoreMark, error) {
	var marks []db.RestoreMark
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(identityLock)); err != nil {
			return err
		}
		var row identity
		err := tx.QueryRow(ctx, `SELECT system_id, database_oid, timeline, events_oid FROM database_identity`).Scan(&row.system, &row.oid, &row.timeline, &row.events)
		now := c.now()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// The first start, or the first since this check came.
			err = c.markCopy(ctx, tx, nil, cur, now)
		case err != nil:
		case row.matches(cur) && row == cur:
		case row.matches(cur):
			// A part one of them could not read: keep what either knows.
			_, err = tx.Exec(ctx, `UPDATE database_identity SET system_id = COALESCE($1, system_id),
				database_oid = COALESCE($2, database_oid), timeline = COALESCE($3, timeline),
				events_oid = COALESCE($4, events_oid)`, cur.system, cur.oid, cur.timeline, cur.events)
		default:
			err = c.markCopy(ctx, tx, &row, cur, now)
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, sqlx.Rebind(sqlx.DOLLAR, db.RestoreMarksSQL))
		if err != nil {
			return err
		}
		marks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (db.RestoreMark, error) {
			var m db.RestoreMark
			err := r.Scan(&m.ID, &m.Data)
			return m, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("db: settle the database's identity: %w", err)
	}
	return marks, nil
}

// markCopy writes the restore mark of a database whose identity is cur
// where the nodes last served was, and moves event_ids past it: the ids
// after the last this database holds may have been given by the one it
// was copied from. was is nil when no identity was recorded yet: a log
// that holds events then may be a backup taken before the identity was
// (by a version before migration 0012, which no row dates), restored
// after the upgrade, so it is moved on as well; for the upgrade itself
// that is a harmless jump. A log that never gave an id (a new database,
// or one callsig migrate is about to fill) only records its identity.
func (c *identityCheck) markCopy(ctx context.Context, tx pgx.Tx, was *identity, cur identity, now time.Time) error {
	// The gap starts after the last id the log holds (last), not at the
	// sequence: a standby or a point-in-time restore holds event_ids as
	// WAL-logged, which nextval does 32 values ahead, so the sequence may
	// stand up to 32 past the log's last id while the lost database gave
	// every id up to it. The mark goes past both.
	var last, seq int64
	if err := tx.QueryRow(ctx, `SELECT
			(SELECT COALESCE(MAX(id), 0) FROM events),
			(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM event_ids)`).Scan(&last, &seq); err != nil {
		return err
	}
	if was == nil && last == 0 && seq == 0 {
		_, err := tx.Exec(ctx, `INSERT INTO database_identity (system_id, database_oid, timeline, events_oid, updated_at) VALUES ($1, $2, $3, $4, $5)`,
			cur.system, cur.oid, cur.timeline, cur.events, now.UnixMilli())
		return err
	}
	// An id in (last, seq] may also be one a node of the previous version
	// is writing meanwhile (an upgrade node by node): a client that saw
	// its event is reset once, needlessly. Starting the gap at seq
	// instead would miss the lost ids under a sequence that a check
	// interrupted before its commit moved on (setval, below).
	mark := db.CopyMark(max(last, seq), now)
	if _, err := tx.Exec(ctx, sqlx.Rebind(sqlx.DOLLAR, db.InsertRestoreMarkSQL), mark, db.RestoreMarkData(last, 0), now.UnixMilli()); err != nil {
		return err
	}
	// setval is not undone by a rollback: a commit that fails leaves the
	// ids moved on and no mark, which the next session's check writes
	// past them (seq).
	if _, err := tx.Exec(ctx, `SELECT setval('event_ids', $1)`, mark); err != nil {
		return err
	}
	if was == nil {
		if _, err := tx.Exec(ctx, `INSERT INTO database_identity (system_id, database_oid, timeline, events_oid, updated_at) VALUES ($1, $2, $3, $4, $5)`,
			cur.system, cur.oid, cur.timeline, cur.events, now.UnixMilli()); err != nil {
			return err
		}
		c.log.Warn("postgres: no identity of this database was recorded yet (the first start of this version, or a backup taken before it restored): event ids move on past a restore mark; clients holding an id given after such a backup are reset",
			"now", cur.String(), "last_id", last, "sequence", seq, "mark", mark)
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE database_identity SET system_id = $1, database_oid = $2, timeline = $3, events_oid = $4, updated_at = $5`,
		cur.system, cur.oid, cur.timeline, cur.events, now.UnixMilli()); err != nil {
		return err
	}
	c.log.Warn("postgres: this database is not the one the nodes last served (restored from a backup, copied, or a replica promoted): event ids move on past a restore mark; clients holding an id the lost database gave are reset",
		"was", was.String(), "now", cur.String(), "last_id", last, "sequence", seq, "mark", mark)
	return nil
}

// ForgetIdentity deletes the identity the nodes of the database named by
// dsn last served, so that the next node to start records its own and
// writes no restore mark: for a database no node served yet, copied as
// a template of new ones (tests), never for one that gave event ids to
// clients.
func ForgetIdentity(ctx context.Context, dsn string) error {
	cfg, err := sessionConfig(dsn)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("db: forget the database's identity: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `DELETE FROM database_identity`); err != nil {
		return fmt.Errorf("db: forget the database's identity: %w", err)
	}
	return nil
}
