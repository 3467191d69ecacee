package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/db"
	"callsig/webhooks"
)

// Webhook endpoints and the admin view of their deliveries. The outbox rows
// are written by Save (insertHook, in outbox.go) in the transaction of the
// change that caused them; the dispatcher drains them and retention prunes
// them (db.Webhooks, with the SQL of outbox_schedule.go).

// webhookSQL is what db.Webhooks runs on SQLite.
var webhookSQL = db.WebhookSQL{
	PutEndpoint:       sqlPutEndpoint,
	DeleteEndpoint:    sqlDeleteEndpoint,
	EndpointExists:    sqlEndpointExists,
	DisableEndpoint:   sqlDisableEndpoint,
	EndpointURL:       `SELECT url FROM webhook_endpoints WHERE id = ?`,                               // one writer: no lock needed
	EndpointState:     `SELECT enabled, deleted, disabled_reason FROM webhook_endpoints WHERE id = ?`, // one writer
	LiveEndpoints:     sqlLiveEndpoints,
	FailDeadEndpoints: sqlFailDeadEndpoints,
	ClaimEndpoint:     sqlClaimEndpoint,
	NextDueByEndpoint: sqlNextDueByEndpoint,
	NextLeaseEnd:      sqlNextLeaseEnd,
	PruneDeliveries:   sqlPruneDeliveries,
	PruneMessage:      sqlPruneMessage,
	PurgeEndpoints:    sqlPurgeEndpoints,
	StampDeleted:      `UPDATE webhook_endpoints SET deleted_at = ? WHERE deleted = 1 AND deleted_at = 0`,
	ExpireDeliveries:  sqlExpireDeliveries,
	PendingCount:      sqlPendingCountOf,
	BacklogCut:        sqlBacklogCut,
	DropDeliveries:    sqlDropDeliveries,
	FailPending:       sqlFailPending,
	AttemptsInFlight:  sqlAttemptsInFlight,
}

// The endpoints' statements; SQLite stores booleans as 0 and 1.
const (
	sqlInsertEndpoint = `INSERT INTO webhook_endpoints
		(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
		VALUES (?, ?, ?, ?, ?, ?, 1, '')`
	sqlPutEndpoint = `INSERT INTO webhook_endpoints
		(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
		VALUES (?, ?, ?, ?, ?, ?, 1, '')
		ON CONFLICT (id) DO UPDATE SET
			enabled = CASE WHEN deleted = 0 AND url = excluded.url AND secret = excluded.secret
				THEN enabled ELSE 1 END,
			disabled_reason = CASE WHEN deleted = 0 AND url = excluded.url AND secret = excluded.secret
				THEN disabled_reason ELSE '' END,
			url = excluded.url, secret = excluded.secret, event_types = excluded.event_types,
			description = excluded.description, deleted = 0, deleted_at = 0`
	sqlDeleteEndpoint = `UPDATE webhook_endpoints SET deleted = 1, enabled = 0, deleted_at = ?
		WHERE id = ? AND deleted = 0`
	sqlEndpointExists = `SELECT 1 FROM webhook_endpoints WHERE id = ? AND deleted = 0`
	sqlRetryTarget    = `SELECT d.locked_until, e.enabled, e.disabled_reason FROM webhook_deliveries d
		JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE d.id = ? AND d.endpoint_id = ? AND e.deleted = 0`
)

// preparedWrite is db.Prepared in the writer's transaction: the
// dispatcher's writes run as the statements prepareWrite prepared on the
// writer connection (counted in prepared, for tests). Any other query
// runs as text, and is counted in unprepared.
func (s *Store) preparedWrite(tx *sqlx.Tx, query string) db.Statement {
	if st := s.wst.dispatcher[query]; st != nil {
		s.prepared.Add(1)
		return db.PreparedStatement(s.txStmt(tx, st))
	}
	s.unprepared.Add(1)
	return db.TxStatement(tx, query)
}

// preparedRead is db.Prepared in a read transaction on the pool, as
// preparedWrite: database/sql prepares each statement once per pooled
// connection.
func (s *Store) preparedRead(tx *sqlx.Tx, query string) db.Statement {
	if st := s.rst.dispatcher[query]; st != nil {
		s.prepared.Add(1)
		return db.PreparedStatement(tx.Stmtx(st))
	}
	s.unprepared.Add(1)
	return db.TxStatement(tx, query)
}

// UpdateWebhooks runs fn in the write transaction (see write: it shares a
// group commit but fails alone) and returns once its changes are durable.
func (s *Store) UpdateWebhooks(ctx context.Context, fn func(webhooks.Tx) error) error {
	return s.write(ctx, func(tx *sqlx.Tx) error {
		return fn(&webhookTx{idempotencyTx{tx, s}})
	})
}

// webhookTx is the webhooks.Tx given to an UpdateWebhooks fn.
type webhookTx struct{ idempotencyTx }

var _ webhooks.Tx = (*webhookTx)(nil)

// InsertWebhookEndpoint registers a new endpoint, secret included.
func (t *webhookTx) InsertWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	ctx = detached(ctx)
	return db.InsertEndpoint(ctx, t.tx, sqlInsertEndpoint, e)
}

// WebhookEndpointCount counts the endpoints not deleted; the single
// writer holds every other transaction back.
func (t *webhookTx) WebhookEndpointCount(ctx context.Context) (int, error) {
	var n int
	if err := t.tx.QueryRowContext(detached(ctx), `SELECT count(*) FROM webhook_endpoints WHERE deleted = 0`).Scan(&n); err != nil {
		return 0, fmt.Errorf("db: count webhook endpoints: %w", err)
	}
	return n, nil
}

// RetryWebhookDelivery puts a delivery back to pending; see
// db.RetryDelivery. The single writer keeps an attempt from taking its
// lease meanwhile.
func (t *webhookTx) RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*webhooks.Delivery, error) {
	ctx = detached(ctx)
	return db.RetryDelivery(ctx, t.tx, sqlRetryTarget, endpointID, deliveryID, now)
}

// WebhookEndpoints returns the live endpoints, oldest first, with secrets,
// once durable, as every read a client sees (see read).
func (s *Store) WebhookEndpoints(ctx context.Context) ([]webhooks.Endpoint, error) {
	var list []webhooks.Endpoint
	err := s.read(ctx, func(tx *sqlx.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+db.EndpointColumns+` FROM webhook_endpoints
			WHERE deleted = 0 ORDER BY created_at, id`)
		if err == nil {
			list, err = db.ScanRows(rows, db.ScanEndpointValue)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("db: list webhooks: %w", err)
	}
	return list, nil
}

// WebhookEndpoint returns one live endpoint with its secret, or an error
// matching calls.ErrNotFound, once durable (see read): a deletion that
// could still be lost is not yet a 404.
func (s *Store) WebhookEndpoint(ctx context.Context, id string) (*webhooks.Endpoint, error) {
	var e *webhooks.Endpoint
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		e, err = db.ScanEndpoint(tx.QueryRowContext(ctx, `SELECT `+db.EndpointColumns+`
			FROM webhook_endpoints WHERE id = ? AND deleted = 0`, id))
		if errors.Is(err, sql.ErrNoRows) {
			e, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("db: load webhook %s: %w", id, err)
	}
	if e == nil {
		return nil, db.WebhookNotFound(id)
	}
	return e, nil
}
