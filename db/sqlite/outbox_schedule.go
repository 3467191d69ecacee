package sqlite

// The outbox's SQL (its Go logic is db.Webhooks'): each statement reads
// an index, so the claim, the schedule and retention cost the same however
// long the backlog; and the queue statistics.

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// The outbox's claim, schedule, statistics and retention; the plan test
// runs these very statements under EXPLAIN QUERY PLAN. The claim and the
// schedule read each live endpoint's range of webhook_deliveries_pending
// (past its few leased rows), the lease end the first entry of
// webhook_deliveries_leased.
const (
	sqlLiveEndpoints = `SELECT id, url, secret FROM webhook_endpoints
		WHERE enabled = 1 AND deleted = 0 ORDER BY id`
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
	// Deleted endpoints whose deliveries are all pruned: each a probe of
	// webhook_deliveries_by_endpoint.
	sqlPurgeEndpoints = `DELETE FROM webhook_endpoints WHERE id IN (
			SELECT e.id FROM webhook_endpoints e WHERE e.deleted = 1 AND e.deleted_at > 0 AND e.deleted_at < ?
			AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id) LIMIT ?)`
	sqlPruneDeliveries = `DELETE FROM webhook_deliveries WHERE id IN (
			SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_status_age
			WHERE status IN ('delivered', 'failed') AND created_at < ? LIMIT ?)
		RETURNING message_id`
	// Pending deliveries past their time, oldest first: a range of
	// webhook_deliveries_by_status_age. Only those overdue since the
	// cut-off too: one a receiver's Retry-After put off, or an admin's
	// retry made due again, has its time still to come.
	sqlExpireDeliveries = `UPDATE webhook_deliveries
		SET status = 'failed', next_attempt_at = 0, locked_until = 0, last_error = ?1
		WHERE id IN (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_status_age
			WHERE status = 'pending' AND created_at < ?2 AND next_attempt_at < ?2 AND locked_until <= ?3 LIMIT ?4)`
	// An endpoint's backlog (db.Webhooks.WebhookBacklogCut), each read
	// bounded by the limit, not by the backlog: its count a range of
	// webhook_deliveries_pending alone, which stops at ?2 (keep+1); the cut a
	// walk of webhook_deliveries_by_endpoint back from its newest
	// delivery, past the kept ones only, with no sort.
	sqlPendingCountOf = `SELECT COUNT(*) FROM (SELECT 1 FROM webhook_deliveries INDEXED BY webhook_deliveries_pending
		WHERE endpoint_id = ?1 AND status = 'pending' LIMIT ?2)`
	sqlBacklogCut = `SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint
		WHERE endpoint_id = ?1 AND status = 'pending' ORDER BY id DESC LIMIT 1 OFFSET ?2`
	// The backlog beyond the cut, in due order: a range of
	// webhook_deliveries_pending, which holds the id (the rowid) itself,
	// so the kept deliveries on the way cost no read of the table. A
	// delivery failed leaves the index: the next batch does not meet it.
	sqlDropDeliveries = `UPDATE webhook_deliveries
		SET status = 'failed', next_attempt_at = 0, locked_until = 0, last_error = ?1
		WHERE id IN (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_pending
			WHERE endpoint_id = ?2 AND status = 'pending' AND id <= ?3 AND locked_until <= ?4
			ORDER BY next_attempt_at LIMIT ?5)`
	// A batch of the pending deliveries, not leased at now, of an
	// endpoint that goes (db.Webhooks.failPending), oldest first: a range
	// of webhook_deliveries_by_endpoint_status in id order, so a batch's
	// rows, and their entries in every index, sit side by side and its
	// commit writes a few pages. Taken in due order (the pending index),
	// they were strewn over the table and its indexes, and each batch of
	// 1,000 wrote thousands of pages to the WAL.
	// None while the endpoint is live (put back since it went): what is
	// queued for it then is its own.
	sqlFailPending = `UPDATE webhook_deliveries
		SET status = 'failed', last_error = ?1, next_attempt_at = 0, locked_until = 0
		WHERE id IN (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint_status
			WHERE endpoint_id = ?2 AND status = 'pending' AND locked_until <= ?3
			AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?2 AND (enabled = 0 OR deleted = 1))
			ORDER BY id LIMIT ?4)`
	// The pending deliveries, not leased at now, of endpoints that were
	// disabled or deleted: they will never be sent. Most are failed when
	// the endpoint goes (failPending); these are the ones an attempt in
	// flight then put back to pending, and those of a backlog beyond the
	// batch a 410 failed. At most a batch per claim (db.FailBatch), in
	// id order as failPending's. Each dead endpoint costs one probe of
	// webhook_deliveries_by_endpoint_status.
	sqlFailDeadEndpoints = `UPDATE webhook_deliveries
		SET status = 'failed', next_attempt_at = 0, locked_until = 0,
			last_error = (SELECT CASE WHEN e.deleted = 1 THEN 'endpoint deleted' ELSE 'endpoint disabled' END
				FROM webhook_endpoints e WHERE e.id = endpoint_id)
		WHERE id IN (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_by_endpoint_status
			WHERE status = 'pending' AND locked_until <= ?1
			AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = 0 OR deleted = 1) LIMIT ?2)`
	// A message goes with its last delivery; webhook_deliveries_by_message
	// answers "is it still referenced".
	sqlPruneMessage = `DELETE FROM webhook_messages WHERE id = ?1
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE message_id = ?1)`
	// A deletion's wait for the attempts in flight to the endpoint. Named,
	// since webhook_deliveries_by_endpoint_status answers endpoint_id = ?
	// too, and SQLite took it without statistics: the endpoint's whole
	// delivery log read for its few leases (0.7-0.9 s for 1.1 million
	// deliveries, at every poll of a DELETE /webhooks/{id}).
	sqlAttemptsInFlight = `SELECT COUNT(*) FROM webhook_deliveries INDEXED BY webhook_deliveries_leased
		WHERE locked_until > 0 AND locked_until > ? AND endpoint_id = ?`
	// An attempt answered 410 disables its endpoint.
	sqlDisableEndpoint = `UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?
		WHERE id = ? AND enabled = 1`
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
