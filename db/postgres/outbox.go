package postgres

// The webhook outbox's SQL: written by Save, claimed by the dispatchers of
// every node with leases taken FOR UPDATE SKIP LOCKED, finished, released,
// scheduled and pruned (the Go logic is db.Webhooks').

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// endpointTakesType is the condition under which webhook endpoint e takes
// messages of type h.type: enabled, live, and subscribed to every type or
// to that one.
const endpointTakesType = `e.enabled AND NOT e.deleted AND
	(e.event_types = '' OR strpos(e.event_types, ',' || h.type || ',') > 0)`

// sqlInsertHook stores a message ($1 msg id, $2 type, $3 call id, $4
// payload, $5 time) and one pending delivery per endpoint that takes its
// type, or nothing when none does, in one round trip; both halves read
// one snapshot, so they agree on the endpoints.
const sqlInsertHook = `WITH h AS (SELECT $2::text AS type),
	m AS (
		INSERT INTO webhook_messages (msg_id, type, call_id, payload, created_at)
		SELECT $1::text, h.type, $3::text, $4::bytea, $5::bigint FROM h
		WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE ` + endpointTakesType + `)
		RETURNING id),
	d AS (
		INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
		SELECT m.id, e.id, 'pending', $5::bigint, $5::bigint FROM m, h, webhook_endpoints e
		WHERE ` + endpointTakesType + `)
	SELECT count(*) FROM m`

// webhookSQL is what db.Webhooks runs on PostgreSQL.
var webhookSQL = db.WebhookSQL{
	PutEndpoint: `INSERT INTO webhook_endpoints AS w
		(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
		VALUES ($1, $2, $3, $4, $5, $6, true, '')
		ON CONFLICT (id) DO UPDATE SET
			enabled = CASE WHEN NOT w.deleted AND w.url = excluded.url AND w.secret = excluded.secret
				THEN w.enabled ELSE true END,
			disabled_reason = CASE WHEN NOT w.deleted AND w.url = excluded.url AND w.secret = excluded.secret
				THEN w.disabled_reason ELSE '' END,
			url = excluded.url, secret = excluded.secret, event_types = excluded.event_types,
			description = excluded.description, deleted = false, deleted_at = 0`,
	DeleteEndpoint: `UPDATE webhook_endpoints SET deleted = true, enabled = false, deleted_at = $1
		WHERE id = $2 AND NOT deleted`,
	EndpointExists: `SELECT 1 FROM webhook_endpoints WHERE id = $1 AND NOT deleted`,
	DisableEndpoint: `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $1
		WHERE id = $2 AND enabled`,
	EndpointURL: `SELECT url FROM webhook_endpoints WHERE id = $1 FOR UPDATE`,
	// Locked: a put reading it waits for a 410's outcome or a deletion
	// being written, and fails what that left pending before it enables
	// the endpoint again (db.Webhooks.PutWebhookEndpoint).
	EndpointState: `SELECT enabled, deleted, disabled_reason FROM webhook_endpoints WHERE id = $1 FOR UPDATE`,
	LiveEndpoints: `SELECT id, url, secret FROM webhook_endpoints
		WHERE enabled AND NOT deleted ORDER BY id COLLATE "C"`,
	// Rows another transaction holds are skipped: two nodes' claims each
	// renew (lock) a lease of their own first, and waiting for each
	// other's would deadlock. What is skipped is failed by a later claim.
	FailDeadEndpoints: `UPDATE webhook_deliveries d
		SET status = 'failed', next_attempt_at = 0, locked_until = 0,
			last_error = CASE WHEN e.deleted THEN 'endpoint deleted' ELSE 'endpoint disabled' END
		FROM webhook_endpoints e
		WHERE e.id = d.endpoint_id AND (NOT e.enabled OR e.deleted)
		AND d.status = 'pending' AND d.locked_until <= $1
		AND d.id IN (SELECT x.id FROM webhook_deliveries x JOIN webhook_endpoints y ON y.id = x.endpoint_id
			WHERE (NOT y.enabled OR y.deleted) AND x.status = 'pending' AND x.locked_until <= $1
			LIMIT $2 FOR UPDATE OF x SKIP LOCKED)`,
	// One endpoint's due deliveries, not leased, in due order. SKIP LOCKED:
	// rows another node is claiming right now are passed over, not waited
	// for; the lease it writes keeps them from being claimed after.
	ClaimEndpoint: `SELECT id, attempts, created_at, next_attempt_at, message_id
		FROM webhook_deliveries
		WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= $2 AND locked_until <= $3
		ORDER BY next_attempt_at, id LIMIT $4
		FOR UPDATE SKIP LOCKED`,
	NextDueByEndpoint: `SELECT e.id, (SELECT d.next_attempt_at FROM webhook_deliveries d
			WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.locked_until <= $1
			ORDER BY d.next_attempt_at LIMIT 1)
		FROM webhook_endpoints e WHERE e.enabled AND NOT e.deleted`,
	NextLeaseEnd: `SELECT COALESCE(min(locked_until), 0) FROM webhook_deliveries
		WHERE locked_until > 0 AND locked_until > $1`,
	// A batch of an endpoint's pending deliveries (db.Webhooks.failPending).
	// None while the endpoint is live: another node may have put the id
	// back between two batches of a deletion, and what is queued from
	// then on is the live endpoint's.
	//
	// The rows are locked in id order (FOR UPDATE under the ORDER BY, a
	// range of webhook_deliveries_by_endpoint_status), as a claim renews
	// leases and FinishWebhookAttempts writes outcomes: those not leased
	// at now include attempts whose leases ran out, which a claim may be
	// renewing. Locked in the order of the plan (a hash join reading
	// every pending delivery of every endpoint in the order they lie in
	// the table), a batch and a renewal of two of them deadlocked, and
	// PostgreSQL aborted one (TestFailingADeadBacklogBesideARenewalDoesNotDeadlock).
	// After a wait for a row, its conditions are checked again (the
	// locking clause's and the outer ones), so a row failed meanwhile is
	// passed over and the LIMIT takes the next. The outer statement reads
	// the batch's ids by the primary key (= ANY of the array), not every
	// pending delivery.
	FailPending: `UPDATE webhook_deliveries
		SET status = 'failed', last_error = $1, next_attempt_at = 0, locked_until = 0
		WHERE id = ANY (ARRAY(SELECT id FROM webhook_deliveries
			WHERE endpoint_id = $2 AND status = 'pending' AND locked_until <= $3
			AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $2 AND (deleted OR NOT enabled))
			ORDER BY id LIMIT $4 FOR UPDATE))
		AND status = 'pending' AND locked_until <= $3`,
	// The literal locked_until > 0 lets the generic plan use the partial
	// index webhook_deliveries_leased (see db.WebhookSQL.AttemptsInFlight).
	AttemptsInFlight: `SELECT COUNT(*) FROM webhook_deliveries
		WHERE locked_until > 0 AND locked_until > $1 AND endpoint_id = $2`,
	// Rows another transaction holds (an admin's retry putting one back to
	// pending) are skipped, not waited for: after the wait PostgreSQL
	// rechecks only the outer statement's conditions, and a bare id IN
	// deleted a delivery the retry had just made pending again (answered
	// 202, then never sent). The status is checked again outside as well.
	PruneDeliveries: `DELETE FROM webhook_deliveries WHERE id IN (
			SELECT id FROM webhook_deliveries
			WHERE status IN ('delivered', 'failed') AND created_at < $1 LIMIT $2
			FOR UPDATE SKIP LOCKED)
		AND status IN ('delivered', 'failed')
		RETURNING message_id`,
	// Rows another transaction holds (PutEndpoint bringing the id back)
	// are skipped, and deleted is checked again outside (see
	// PruneDeliveries).
	StampDeleted: `UPDATE webhook_endpoints SET deleted_at = $1 WHERE deleted AND deleted_at = 0`,
	PurgeEndpoints: `DELETE FROM webhook_endpoints WHERE id IN (
			SELECT e.id FROM webhook_endpoints e WHERE e.deleted AND e.deleted_at > 0 AND e.deleted_at < $1
			AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = e.id) LIMIT $2
			FOR UPDATE SKIP LOCKED)
		AND deleted`,
	PruneMessage: `DELETE FROM webhook_messages WHERE id = $1
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE message_id = $1)`,
	// Overdue since the cut-off too (see SQLite's). Rows an attempt holds
	// (a node claiming them now) are skipped: their attempt records its
	// outcome, and the next pass finds what is left.
	ExpireDeliveries: `UPDATE webhook_deliveries
		SET status = 'failed', next_attempt_at = 0, locked_until = 0, last_error = $1
		WHERE id IN (SELECT id FROM webhook_deliveries
			WHERE status = 'pending' AND created_at < $2 AND next_attempt_at < $2 AND locked_until <= $3
			LIMIT $4 FOR UPDATE SKIP LOCKED)`,
	// An endpoint's backlog (db.Webhooks.WebhookBacklogCut), each read
	// bounded by the limit, not by the backlog: a dead receiver's
	// millions, read and sorted whole, took seconds a pass and failed once
	// past the statement timeout, so the bound never held. The count stops
	// at $2 (keep+1), in webhook_deliveries_pending. The cut walks
	// webhook_deliveries_by_endpoint back from the endpoint's newest
	// delivery, past the kept ones. The endpoint is a range, not an
	// equality, in both: with endpoint_id = $1 the planner drops it from
	// the order, and the generic plan a prepared statement turns to walked
	// the primary key back from the newest delivery of every endpoint
	// (reading the others' newer ones, a busy endpoint's millions), or
	// scanned the table for a count.
	PendingCount: `SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries
			WHERE endpoint_id >= $1 AND endpoint_id <= $1 AND status = 'pending' LIMIT $2) p`,
	BacklogCut: `SELECT id FROM webhook_deliveries
		WHERE endpoint_id >= $1 AND endpoint_id <= $1 AND status = 'pending'
		ORDER BY endpoint_id DESC, id DESC LIMIT 1 OFFSET $2`,
	// The backlog beyond the cut, in due order (the order of
	// webhook_deliveries_pending, which a failed delivery leaves). Rows
	// another transaction holds are skipped, and the status is checked
	// again outside (see PruneDeliveries): an admin's retry, or a node
	// claiming them, goes first; the next pass finds what is left.
	DropDeliveries: `UPDATE webhook_deliveries
		SET status = 'failed', next_attempt_at = 0, locked_until = 0, last_error = $1
		WHERE id IN (SELECT id FROM webhook_deliveries
			WHERE endpoint_id = $2 AND status = 'pending' AND id <= $3 AND locked_until <= $4
			ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED)
		AND status = 'pending'`,
}

// WebhookQueueStats returns how many deliveries are pending and when the
// oldest of them was queued (0 when none).
func (s *Store) WebhookQueueStats(ctx context.Context) (pending int, oldest int64, err error) {
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT count(*), COALESCE(min(created_at), 0)
			FROM webhook_deliveries WHERE status = 'pending'`).Scan(&pending, &oldest)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("db: webhook queue stats: %w", err)
	}
	return pending, oldest, nil
}
