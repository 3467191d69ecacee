package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
	"callsig/webhooks"
)

// Webhook endpoints and the admin view of their deliveries. The outbox rows
// are written by Save (InsertHook) in the transaction of the change that
// caused them; the dispatcher drains them (db.Webhooks, with the SQL of
// outbox.go).

const (
	sqlInsertEndpoint = `INSERT INTO webhook_endpoints
		(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
		VALUES ($1, $2, $3, $4, $5, $6, true, '')`
	// FOR UPDATE OF d: a node claiming the delivery meanwhile waits for
	// this retry (or this retry for its lease), never both at once.
	sqlRetryTarget = `SELECT d.locked_until, e.enabled, e.disabled_reason FROM webhook_deliveries d
		JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE d.id = $1 AND d.endpoint_id = $2 AND NOT e.deleted FOR UPDATE OF d`
)

// UpdateWebhooks runs fn in its own transaction and returns once its
// changes are durable.
func (s *Store) UpdateWebhooks(ctx context.Context, fn func(webhooks.Tx) error) error {
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		return fn(&webhookTx{idempotencyTx{tx}})
	})
}

// webhookTx is the webhooks.Tx given to an UpdateWebhooks fn.
type webhookTx struct{ idempotencyTx }

var _ webhooks.Tx = (*webhookTx)(nil)

// InsertWebhookEndpoint registers a new endpoint, secret included.
func (t *webhookTx) InsertWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	return db.InsertEndpoint(ctx, t.tx, sqlInsertEndpoint, e)
}

// WebhookEndpointCount counts the endpoints not deleted, under a
// transaction-scoped advisory lock that two nodes registering endpoints at
// once take in turn: each counts what the other committed.
func (t *webhookTx) WebhookEndpointCount(ctx context.Context) (int, error) {
	var n int
	if _, err := t.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('callsig:webhook_endpoints'))`); err != nil {
		return 0, fmt.Errorf("db: lock the webhook endpoints' count: %w", err)
	}
	if err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM webhook_endpoints WHERE NOT deleted`).Scan(&n); err != nil {
		return 0, fmt.Errorf("db: count webhook endpoints: %w", err)
	}
	return n, nil
}

// RetryWebhookDelivery puts a delivery back to pending; see
// db.RetryDelivery.
func (t *webhookTx) RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*webhooks.Delivery, error) {
	return db.RetryDelivery(ctx, t.tx, sqlRetryTarget, endpointID, deliveryID, now)
}

// WebhookEndpoints returns the live endpoints, oldest first, with secrets.
func (s *Store) WebhookEndpoints(ctx context.Context) ([]webhooks.Endpoint, error) {
	var list []webhooks.Endpoint
	err := s.read(ctx, func(tx *sqlx.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+db.EndpointColumns+` FROM webhook_endpoints
			WHERE NOT deleted ORDER BY created_at, id COLLATE "C"`)
		if err != nil {
			return err
		}
		list, err = db.ScanRows(rows, db.ScanEndpointValue)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("db: list webhooks: %w", err)
	}
	return list, nil
}

// WebhookEndpoint returns one live endpoint with its secret, or an error
// matching calls.ErrNotFound.
func (s *Store) WebhookEndpoint(ctx context.Context, id string) (*webhooks.Endpoint, error) {
	var e *webhooks.Endpoint
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		e, err = db.ScanEndpoint(tx.QueryRowContext(ctx, `SELECT `+db.EndpointColumns+`
			FROM webhook_endpoints WHERE id = $1 AND NOT deleted`, id))
		if errNoRows(err) {
			return db.WebhookNotFound(id)
		}
		return err
	})
	if err != nil && calls.CodeOf(err) == "" {
		err = fmt.Errorf("db: load webhook %s: %w", id, err)
	}
	return e, err
}
