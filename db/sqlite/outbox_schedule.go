package sqlite

// The outbox's schedule, statistics and retention: reads of indexes only,
// and the pruning of finished deliveries.

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/webhooks"
)

// NextWebhookDue returns, for each live endpoint with a pending delivery
// not leased at now, when its earliest one is due, and when the earliest
// lease running at now ends (0: none). Each endpoint is one probe of
// webhook_deliveries_pending (past its few leased rows), the lease end the
// first entry of webhook_deliveries_leased: the cost does not grow with
// the backlog.
func (s *Store) NextWebhookDue(ctx context.Context, now int64) (webhooks.Due, error) {
	due := webhooks.Due{Endpoints: map[string]int64{}}
	err := s.read(ctx, func(tx *sqlx.Tx) error {
		rows, err := tx.QueryContext(ctx, sqlNextDueByEndpoint, now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var at sql.NullInt64
			if err := rows.Scan(&id, &at); err != nil {
				return err
			}
			if at.Valid {
				due.Endpoints[id] = at.Int64
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, sqlNextLeaseEnd, now).Scan(&due.LeaseEnd)
	})
	if err != nil {
		return webhooks.Due{}, fmt.Errorf("db: next webhook due: %w", err)
	}
	return due, nil
}

// The outbox's schedule and statistics; the plan test runs these very
// statements under EXPLAIN QUERY PLAN.
const (
	// One endpoint's due deliveries, not leased, in due order: a range of
	// webhook_deliveries_pending from the endpoint's oldest due entry.
	sqlClaimEndpoint = `SELECT id, attempts, created_at, next_attempt_at, message_id
		FROM webhook_deliveries INDEXED BY webhook_deliveries_pending
		WHERE endpoint_id = ? AND status = 'pending' AND next_attempt_at <= ? AND locked_until <= ?
		ORDER BY next_attempt_at, id LIMIT ?`
	sqlNextDueByEndpoint = `SELECT e.id, (SELECT d.next_attempt_at
			FROM webhook_deliveries d INDEXED BY webhook_deliveries_pending
			WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.locked_until <= ?1
			ORDER BY d.next_attempt_at LIMIT 1)
		FROM webhook_endpoints e WHERE e.enabled = 1 AND e.deleted = 0`
	sqlNextLeaseEnd = `SELECT COALESCE(MIN(locked_until), 0) FROM webhook_deliveries
		WHERE locked_until > 0 AND locked_until > ?`
	sqlPendingCount = `SELECT COUNT(*) FROM webhook_deliveries INDEXED BY webhook_deliveries_by_status_age
		WHERE status = 'pending'`
	sqlOldestPending = `SELECT COALESCE(MIN(created_at), 0) FROM webhook_deliveries
		INDEXED BY webhook_deliveries_by_status_age WHERE status = 'pending'`
	// Finished deliveries past retention, oldest first per status: a range
	// of webhook_deliveries_by_status_age each, never a pending row.
	sqlPruneDeliveries = `DELETE FROM webhook_deliveries WHERE id IN (
			SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_status_age
			WHERE status IN ('delivered', 'failed') AND created_at < ? LIMIT ?)
		RETURNING message_id`
	sqlFailDeadEndpoints = `UPDATE webhook_deliveries INDEXED BY webhook_deliveries_pending
		SET status = 'failed', next_attempt_at = 0, locked_until = 0,
			last_error = (SELECT CASE WHEN e.deleted = 1 THEN 'endpoint deleted' ELSE 'endpoint disabled' END
				FROM webhook_endpoints e WHERE e.id = endpoint_id)
		WHERE status = 'pending' AND locked_until <= ?
		AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = 0 OR deleted = 1)`
	// A message goes with its last delivery; webhook_deliveries_by_message
	// answers "is it still referenced".
	sqlPruneMessage = `DELETE FROM webhook_messages WHERE id = ?1
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE message_id = ?1)`
)

// WebhookQueueStats returns how many deliveries are pending and when the
// oldest of them was queued (0 when none). Both are read from the index
// webhook_deliveries_by_status_age alone: a count of the pending range, and
// its first entry.
func (s *Store) WebhookQueueStats(ctx context.Context) (pending int, oldest int64, err error) {
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.QueryRowContext(ctx, sqlPendingCount).Scan(&pending); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, sqlOldestPending).Scan(&oldest)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("db: webhook queue stats: %w", err)
	}
	return pending, oldest, nil
}

// PruneWebhookDeliveries deletes up to limit finished deliveries created
// before before (Unix ms) and the messages left without a delivery, in one
// write through the writer, and returns how many deliveries it deleted.
// Pending deliveries are never pruned, however old. Callers loop while a
// full batch came back, so a backlog never holds the writer for long.
func (s *Store) PruneWebhookDeliveries(ctx context.Context, before int64, limit int) (int, error) {
	var n int
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, sqlPruneDeliveries, before, limit)
		if err != nil {
			return err
		}
		messages := map[int64]bool{}
		for rows.Next() {
			var m int64
			if err := rows.Scan(&m); err != nil {
				rows.Close()
				return err
			}
			n++
			messages[m] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for m := range messages {
			if _, err := tx.ExecContext(ctx, sqlPruneMessage, m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("db: prune webhook deliveries: %w", err)
	}
	return n, nil
}
