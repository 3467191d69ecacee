package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
	"callsig/webhooks"
)

// Webhook endpoints and the admin view of their deliveries. The outbox rows
// are written by Save (insertHook, in outbox.go) in the transaction of the
// change that caused them; the dispatcher drains them (outbox_claim.go) and
// retention prunes them (outbox_schedule.go).

// UpdateWebhooks runs fn in the write transaction (see write: it shares a
// group commit but fails alone) and returns once its changes are durable.
func (s *Store) UpdateWebhooks(ctx context.Context, fn func(webhooks.Tx) error) error {
	return s.write(ctx, func(tx *sqlx.Tx) error {
		return fn(&webhookTx{idempotencyTx{tx}})
	})
}

// webhookTx is the webhooks.Tx given to an UpdateWebhooks fn.
type webhookTx struct{ idempotencyTx }

var _ webhooks.Tx = (*webhookTx)(nil)

// InsertWebhookEndpoint registers a new endpoint, secret included.
func (t *webhookTx) InsertWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO webhook_endpoints
		(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
		VALUES (?, ?, ?, ?, ?, ?, 1, '')`,
		e.ID, e.URL, e.Secret, db.EncodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
	if err != nil {
		return fmt.Errorf("db: insert webhook %s: %w", e.ID, err)
	}
	return nil
}

// PutWebhookEndpoint creates or replaces the endpoint with e.ID, as the
// configuration (not the API) describes it. A replaced endpoint keeps its
// creation time; it is enabled again only when its URL or secret changed,
// so restarting with the configuration that earned a 410 does not undo it.
func (s *Store) PutWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	return s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints
			(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
			VALUES (?, ?, ?, ?, ?, ?, 1, '')
			ON CONFLICT (id) DO UPDATE SET
				enabled = CASE WHEN deleted = 0 AND url = excluded.url AND secret = excluded.secret
					THEN enabled ELSE 1 END,
				disabled_reason = CASE WHEN deleted = 0 AND url = excluded.url AND secret = excluded.secret
					THEN disabled_reason ELSE '' END,
				url = excluded.url, secret = excluded.secret, event_types = excluded.event_types,
				description = excluded.description, deleted = 0`,
			e.ID, e.URL, e.Secret, db.EncodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
		if err != nil {
			return fmt.Errorf("db: put webhook %s: %w", e.ID, err)
		}
		return nil
	})
}

// WebhookEndpoints returns the live endpoints, oldest first, with secrets.
func (s *Store) WebhookEndpoints(ctx context.Context) ([]webhooks.Endpoint, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+db.EndpointColumns+` FROM webhook_endpoints
		WHERE deleted = 0 ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("db: list webhooks: %w", err)
	}
	defer rows.Close()
	list := []webhooks.Endpoint{}
	for rows.Next() {
		e, err := db.ScanEndpoint(rows)
		if err != nil {
			return nil, fmt.Errorf("db: list webhooks: %w", err)
		}
		list = append(list, *e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: list webhooks: %w", err)
	}
	return list, nil
}

// WebhookEndpoint returns one live endpoint with its secret, or an error
// matching calls.ErrNotFound.
func (s *Store) WebhookEndpoint(ctx context.Context, id string) (*webhooks.Endpoint, error) {
	e, err := db.ScanEndpoint(s.rdb.QueryRowContext(ctx, `SELECT `+db.EndpointColumns+`
		FROM webhook_endpoints WHERE id = ? AND deleted = 0`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, webhookNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("db: load webhook %s: %w", id, err)
	}
	return e, nil
}

func webhookNotFound(id string) error {
	return &calls.Error{Code: calls.CodeNotFound, Message: fmt.Sprintf("webhook %s not found", id)}
}

// DeleteWebhookEndpoint soft-deletes an endpoint (its deliveries keep
// pointing at the row) and fails its pending deliveries not in flight at
// now, so nothing more is sent to it. An unknown or already deleted id
// matches calls.ErrNotFound.
func (s *Store) DeleteWebhookEndpoint(ctx context.Context, id string, now int64) error {
	return s.write(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET deleted = 1, enabled = 0
			WHERE id = ? AND deleted = 0`, id)
		if err != nil {
			return fmt.Errorf("db: delete webhook %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("db: delete webhook %s: %w", id, err)
		} else if n == 0 {
			return webhookNotFound(id)
		}
		return failPending(ctx, tx, id, now, "endpoint deleted")
	})
}

// failPending fails the pending deliveries of an endpoint that will not be
// sent to any more. Those leased at now are left to their attempt in
// flight, which records what the receiver really answered; should it ask
// for a retry, the claim fails the delivery then.
func failPending(ctx context.Context, tx *sqlx.Tx, endpointID string, now int64, reason string) error {
	_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries
		SET status = 'failed', last_error = ?, next_attempt_at = 0, locked_until = 0
		WHERE endpoint_id = ? AND status = 'pending' AND locked_until <= ?`, reason, endpointID, now)
	if err != nil {
		return fmt.Errorf("db: fail deliveries of %s: %w", endpointID, err)
	}
	return nil
}

// WebhookDeliveries lists an endpoint's deliveries newest first, or fails
// with calls.ErrNotFound for an unknown endpoint.
func (s *Store) WebhookDeliveries(ctx context.Context, endpointID string, q webhooks.DeliveryQuery) ([]webhooks.Delivery, error) {
	if q.Limit <= 0 {
		q.Limit = webhooks.DefaultDeliveryLimit
	}
	list := []webhooks.Delivery{}
	err := s.read(ctx, func(tx *sqlx.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM webhook_endpoints WHERE id = ? AND deleted = 0`, endpointID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return webhookNotFound(endpointID)
		}
		if err != nil {
			return err
		}
		// Walks webhook_deliveries_by_endpoint backwards; a status filter is
		// applied on the way, which is cheap for the statuses admins look for.
		query := `SELECT ` + db.DeliveryColumns + ` FROM webhook_deliveries d
			JOIN webhook_messages m ON m.id = d.message_id
			WHERE d.endpoint_id = ?`
		args := []any{endpointID}
		if q.Status != "" {
			query += ` AND d.status = ?`
			args = append(args, string(q.Status))
		}
		query += ` ORDER BY d.id DESC LIMIT ?`
		rows, err := tx.QueryContext(ctx, query, append(args, q.Limit)...)
		if err != nil {
			return err
		}
		list, err = db.ScanRows(rows, db.ScanDelivery)
		return err
	})
	if err != nil && calls.CodeOf(err) == "" {
		err = fmt.Errorf("db: list deliveries of %s: %w", endpointID, err)
	}
	return list, err
}

// RetryWebhookDelivery puts a delivery of a live endpoint back to pending,
// due at now, whatever its status, and returns it. Its attempt count is
// kept: a failed delivery retried by hand gets one more attempt. A delivery
// leased at now (an attempt in flight) is refused with
// calls.ErrDeliveryInFlight: that attempt's outcome would overwrite the
// retry. One of a disabled endpoint is refused with
// calls.ErrEndpointDisabled: the dispatcher would fail it unsent.
func (t *webhookTx) RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*webhooks.Delivery, error) {
	var (
		lockedUntil int64
		enabled     bool
		reason      string
	)
	err := t.tx.QueryRowContext(ctx, `SELECT d.locked_until, e.enabled, e.disabled_reason FROM webhook_deliveries d
		JOIN webhook_endpoints e ON e.id = d.endpoint_id
		WHERE d.id = ? AND d.endpoint_id = ? AND e.deleted = 0`, deliveryID, endpointID).Scan(&lockedUntil, &enabled, &reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, &calls.Error{Code: calls.CodeNotFound,
			Message: fmt.Sprintf("delivery %d of webhook %s not found", deliveryID, endpointID)}
	case err != nil:
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	case !enabled:
		return nil, &calls.Error{Code: calls.CodeEndpointDisabled,
			Message: fmt.Sprintf("webhook %s is disabled (%s); delivery %d would not be sent", endpointID, reason, deliveryID)}
	case lockedUntil > now:
		return nil, &calls.Error{Code: calls.CodeDeliveryInFlight,
			Message: fmt.Sprintf("delivery %d of webhook %s is being attempted now; retry once the attempt ends", deliveryID, endpointID)}
	}
	if _, err := t.tx.ExecContext(ctx, `UPDATE webhook_deliveries
		SET status = 'pending', next_attempt_at = ?, delivered_at = 0 WHERE id = ?`, now, deliveryID); err != nil {
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	}
	d, err := db.ScanDelivery(t.tx.QueryRowContext(ctx, `SELECT `+db.DeliveryColumns+` FROM webhook_deliveries d
		JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = ?`, deliveryID))
	if err != nil {
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	}
	return &d, nil
}
