package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// Presence is the cluster presence table set (migration 0002): node
// leases and (node, user) rows, on a small pool of its own. The pool is
// separate from the Store's because presence is asked inside other
// transactions (calls.Presence.Online while an invitation is written) and
// the lease must be renewed while the node is busiest: with one shared
// pool, a full pool of transactions each waiting for one more connection
// would stall them all, and a starved renewal would get a busy node
// declared dead. The times are the database server's clock
// (clock_timestamp), so the nodes' clocks never have to agree.
//
// Within the pool, the writes (a stream's row, a sweep, a node clearing
// or leaving) hold at most all connections but one (see writer): a burst
// of them, the streams of a dead node reconnecting here or rows stuck
// behind a lock, must not make the checks asked while a request is
// answered (Online, bounded to a fraction of a second, and unknown counts
// as offline) or the lease renewal wait for a connection. Those two are
// short and never wait on a row lock a write holds for long.
type Presence struct {
	db     *sqlx.DB
	writes chan struct{} // a token per connection a write may hold
	closed atomic.Bool
}

// PresenceOptions configures OpenPresence; the zero value is the default.
type PresenceOptions struct {
	MaxConns         int           // the pool (default 4: three for writes, one kept for checks and renewals)
	StatementTimeout time.Duration // server-side bound per statement (default 2 s)
	Logger           *slog.Logger
}

// OpenPresence connects the presence pool to the database named by dsn.
// The schema is Open's: open the Store first, which migrates.
func OpenPresence(ctx context.Context, dsn string, opts PresenceOptions) (*Presence, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 2 * time.Second
	}
	sdb, err := openPool(ctx, dsn, opts.MaxConns, opts.StatementTimeout, true, "the presence pool ")
	if err != nil {
		return nil, err
	}
	// A pool of one cannot keep one back.
	return &Presence{db: sdb, writes: make(chan struct{}, max(opts.MaxConns-1, 1))}, nil
}

// Close closes the pool; later calls fail with db.ErrClosed.
func (p *Presence) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.db.Close()
}

// Pools returns the presence pool by name, for its metrics; not for
// queries.
func (p *Presence) Pools() map[string]*sql.DB {
	return map[string]*sql.DB{"postgres_presence": p.db.DB}
}

func (p *Presence) pool() (*sqlx.DB, error) {
	if p.closed.Load() {
		return nil, db.ErrClosed
	}
	return p.db, nil
}

// writer is pool for a write: it waits, as long as ctx allows, until
// fewer than all connections but one are held by writes, and returns the
// release of its turn with the pool.
func (p *Presence) writer(ctx context.Context) (*sqlx.DB, func(), error) {
	q, err := p.pool()
	if err != nil {
		return nil, nil, err
	}
	select {
	case p.writes <- struct{}{}:
		return q, func() { <-p.writes }, nil
	case <-ctx.Done():
		return nil, nil, unavailable(fmt.Errorf("db: presence: waiting for a connection: %w", ctx.Err()))
	}
}

// nowMS is the database server's time in Unix ms, read per statement.
const nowMS = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`

// sqlRenewLease writes the node's lease; xmax = 0 tells a row inserted
// (the node is new, or was swept as dead meanwhile) from one updated.
const sqlRenewLease = `INSERT INTO nodes (node_id, lease_until) VALUES ($1, ` + nowMS + ` + $2)
	ON CONFLICT (node_id) DO UPDATE SET lease_until = excluded.lease_until
	RETURNING (xmax = 0)`

// RenewLease extends node's lease to lease from now. inserted is true
// when the node had no row: its first renewal, or the node was swept as
// dead meanwhile (its presence rows are gone; it must write them again).
func (p *Presence) RenewLease(ctx context.Context, node string, lease time.Duration) (inserted bool, err error) {
	q, err := p.pool()
	if err != nil {
		return false, err
	}
	if err := q.QueryRowContext(ctx, sqlRenewLease, node, lease.Milliseconds()).Scan(&inserted); err != nil {
		return false, unavailable(fmt.Errorf("db: renew lease of node %s: %w", node, err))
	}
	return inserted, nil
}

// AddPresence records that node holds a stream of user (idempotent).
func (p *Presence) AddPresence(ctx context.Context, node, user string) error {
	q, done, err := p.writer(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := q.ExecContext(ctx, `INSERT INTO presence (node_id, user_id) VALUES ($1, $2)
		ON CONFLICT DO NOTHING`, node, user); err != nil {
		return unavailable(fmt.Errorf("db: add presence of %s on %s: %w", user, node, err))
	}
	return nil
}

// AddPresences records several users at once (a node swept as dead
// writing its rows again).
func (p *Presence) AddPresences(ctx context.Context, node string, users []string) error {
	q, done, err := p.writer(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := q.ExecContext(ctx, `INSERT INTO presence (node_id, user_id)
		SELECT $1, u FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING`, node, users); err != nil {
		return unavailable(fmt.Errorf("db: add presence of %d users on %s: %w", len(users), node, err))
	}
	return nil
}

// RemovePresence deletes node's row of user (idempotent).
func (p *Presence) RemovePresence(ctx context.Context, node, user string) error {
	q, done, err := p.writer(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := q.ExecContext(ctx, `DELETE FROM presence WHERE node_id = $1 AND user_id = $2`, node, user); err != nil {
		return unavailable(fmt.Errorf("db: remove presence of %s on %s: %w", user, node, err))
	}
	return nil
}

// sqlOnline is "a row of user on a node whose lease is unexpired", other
// than the node $2 names ("" excludes none).
const sqlOnline = `SELECT EXISTS (SELECT 1 FROM presence p JOIN nodes n ON n.node_id = p.node_id
	WHERE p.user_id = $1 AND p.node_id <> $2 AND n.lease_until > ` + nowMS + `)`

// Online reports whether user has a presence row on a live node other
// than except ("": any node).
func (p *Presence) Online(ctx context.Context, user, except string) (bool, error) {
	q, err := p.pool()
	if err != nil {
		return false, err
	}
	var on bool
	if err := q.QueryRowContext(ctx, sqlOnline, user, except).Scan(&on); err != nil {
		return false, unavailable(fmt.Errorf("db: presence of %s: %w", user, err))
	}
	return on, nil
}

// sweepBatch bounds the dead nodes one sweep takes.
const sweepBatch = 16

// SweepDead removes the nodes whose lease has expired (never self), with
// their presence rows, in one transaction, and returns how many nodes it
// removed and the users who now have no row on any live node (each once).
// The dead nodes are taken FOR UPDATE SKIP LOCKED: two nodes sweeping at
// once split them, neither waits for the other, and none is handled twice.
// A dead node that comes back and renews meanwhile either waits for the
// sweep (its renewal then inserts a fresh row: RenewLease says so) or is
// renewed before, and then is not expired any more.
func (p *Presence) SweepDead(ctx context.Context, self string) (nodes int, offline []string, err error) {
	q, done, err := p.writer(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer done()
	tx, err := q.BeginTxx(ctx, nil)
	if err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep nodes: begin: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var dead []string
	if err := tx.SelectContext(ctx, &dead, `SELECT node_id FROM nodes
		WHERE lease_until <= `+nowMS+` AND node_id <> $1
		ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED`, self, sweepBatch); err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep nodes: %w", err))
	}
	if len(dead) == 0 {
		return 0, nil, nil
	}
	var gone []string
	if err := tx.SelectContext(ctx, &gone, `DELETE FROM presence WHERE node_id = ANY($1) RETURNING user_id`, dead); err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep presence of dead nodes: %w", err))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE node_id = ANY($1)`, dead); err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep dead nodes: %w", err))
	}
	if offline, err = nowOffline(ctx, tx, gone); err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return 0, nil, unavailable(fmt.Errorf("db: sweep nodes: commit: %w", err))
	}
	return len(dead), offline, nil
}

// sqlNowOffline keeps, once each, those of the users $1 with no row on a
// live node.
const sqlNowOffline = `SELECT DISTINCT g FROM unnest($1::text[]) AS g
	WHERE NOT EXISTS (SELECT 1 FROM presence p JOIN nodes n ON n.node_id = p.node_id
		WHERE p.user_id = g AND n.lease_until > ` + nowMS + `)
	ORDER BY 1`

// nowOffline returns those of gone, the users whose rows tx deleted, left
// with no row on any live node.
func nowOffline(ctx context.Context, tx *sqlx.Tx, gone []string) ([]string, error) {
	if len(gone) == 0 {
		return nil, nil
	}
	var offline []string
	if err := tx.SelectContext(ctx, &offline, sqlNowOffline, gone); err != nil {
		return nil, fmt.Errorf("users now offline: %w", err)
	}
	return offline, nil
}

// ClearNode deletes the presence rows node holds, in one transaction, and
// returns the users left with no row on any live node (each once). A node
// calls it as it joins, before it holds any stream: rows it finds then
// are those of an earlier process under the same node id, killed before it
// could leave, whose streams died with it. Its lease does not lapse (the
// new process renews the same row), so no sweep would ever remove them.
func (p *Presence) ClearNode(ctx context.Context, node string) (offline []string, err error) {
	q, done, err := p.writer(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	tx, err := q.BeginTxx(ctx, nil)
	if err != nil {
		return nil, unavailable(fmt.Errorf("db: clear presence of node %s: begin: %w", node, err))
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var gone []string
	if err := tx.SelectContext(ctx, &gone, `DELETE FROM presence WHERE node_id = $1 RETURNING user_id`, node); err != nil {
		return nil, unavailable(fmt.Errorf("db: clear presence of node %s: %w", node, err))
	}
	if offline, err = nowOffline(ctx, tx, gone); err != nil {
		return nil, unavailable(fmt.Errorf("db: clear presence of node %s: %w", node, err))
	}
	if err := tx.Commit(); err != nil {
		return nil, unavailable(fmt.Errorf("db: clear presence of node %s: commit: %w", node, err))
	}
	return offline, nil
}

// RemoveNode deletes node's row (a node leaving gracefully, once its
// presence rows are gone); any presence rows left are deleted with it.
func (p *Presence) RemoveNode(ctx context.Context, node string) error {
	q, done, err := p.writer(ctx)
	if err != nil {
		return err
	}
	defer done()
	tx, err := q.BeginTxx(ctx, nil)
	if err != nil {
		return unavailable(fmt.Errorf("db: remove node %s: %w", node, err))
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if _, err := tx.ExecContext(ctx, `DELETE FROM presence WHERE node_id = $1`, node); err != nil {
		return unavailable(fmt.Errorf("db: remove presence of node %s: %w", node, err))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE node_id = $1`, node); err != nil {
		return unavailable(fmt.Errorf("db: remove node %s: %w", node, err))
	}
	if err := tx.Commit(); err != nil {
		return unavailable(fmt.Errorf("db: remove node %s: %w", node, err))
	}
	return nil
}
