package postgres

// The webhook outbox: written by Save, claimed by the dispatchers of every
// node with leases taken FOR UPDATE SKIP LOCKED, finished, released,
// scheduled and pruned.

import (
	"context"
	"database/sql"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// One outbox row per enabled, live endpoint subscribed to the type.
const (
	sqlSubscribed = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints
		WHERE enabled AND NOT deleted AND (event_types = '' OR strpos(event_types, ',' || $1 || ',') > 0))`
	sqlInsertMessage = `INSERT INTO webhook_messages (msg_id, type, call_id, payload, created_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`
	sqlFanOut = `INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
		SELECT $1, id, 'pending', $2, $2 FROM webhook_endpoints
		WHERE enabled AND NOT deleted AND (event_types = '' OR strpos(event_types, ',' || $3 || ',') > 0)`
)

// insertHook stores one webhook message and fans it out to the outbox. A
// message no endpoint is subscribed to is not stored.
func (t *callsTx) insertHook(ctx context.Context, h *calls.HookEvent) error {
	var subscribed bool
	if err := t.tx.QueryRowContext(ctx, sqlSubscribed, string(h.Type)).Scan(&subscribed); err != nil {
		return fmt.Errorf("db: webhook subscribers of %s: %w", h.Type, err)
	}
	if !subscribed {
		return nil
	}
	msg, err := webhooks.NewMessage(*h)
	if err != nil {
		return fmt.Errorf("db: %w", err)
	}
	var id int64
	if err := t.tx.QueryRowContext(ctx, sqlInsertMessage, msg.ID, string(h.Type), h.CallID, msg.Payload, h.Time).Scan(&id); err != nil {
		return fmt.Errorf("db: insert %s webhook: %w", h.Type, err)
	}
	if _, err := t.tx.ExecContext(ctx, sqlFanOut, id, h.Time, string(h.Type)); err != nil {
		return fmt.Errorf("db: queue %s webhook: %w", h.Type, err)
	}
	return nil
}

const (
	// One endpoint's due deliveries, not leased, in due order. SKIP LOCKED:
	// rows another node is claiming right now are passed over, not waited
	// for; the lease it writes keeps them from being claimed after.
	sqlClaimEndpoint = `SELECT id, attempts, created_at, next_attempt_at, message_id
		FROM webhook_deliveries
		WHERE endpoint_id = $1 AND status = 'pending' AND next_attempt_at <= $2 AND locked_until <= $2
		ORDER BY next_attempt_at, id LIMIT $3
		FOR UPDATE SKIP LOCKED`
	sqlFailDeadEndpoints = `UPDATE webhook_deliveries d
		SET status = 'failed', next_attempt_at = 0, locked_until = 0,
			last_error = CASE WHEN e.deleted THEN 'endpoint deleted' ELSE 'endpoint disabled' END
		FROM webhook_endpoints e
		WHERE e.id = d.endpoint_id AND (NOT e.enabled OR e.deleted)
		AND d.status = 'pending' AND d.locked_until <= $1`
	sqlNextDueByEndpoint = `SELECT e.id, (SELECT d.next_attempt_at FROM webhook_deliveries d
			WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.locked_until <= $1
			ORDER BY d.next_attempt_at LIMIT 1)
		FROM webhook_endpoints e WHERE e.enabled AND NOT e.deleted`
	sqlNextLeaseEnd = `SELECT COALESCE(min(locked_until), 0) FROM webhook_deliveries
		WHERE locked_until > 0 AND locked_until > $1`
	sqlPruneDeliveries = `DELETE FROM webhook_deliveries WHERE id IN (
			SELECT id FROM webhook_deliveries
			WHERE status IN ('delivered', 'failed') AND created_at < $1 LIMIT $2)
		RETURNING message_id`
	sqlPruneMessage = `DELETE FROM webhook_messages WHERE id = $1
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE message_id = $1)`
)

// ClaimWebhookDeliveries leases, for each live endpoint, up to its free
// share of pending deliveries due at c.Now and not leased, until
// c.LeaseUntil, and returns at most c.Limit of them, earliest due first.
// Pending deliveries of endpoints disabled or deleted meanwhile are failed
// on the way. Rows are taken FOR UPDATE SKIP LOCKED, so dispatchers of
// several nodes claiming at once never get the same delivery.
func (s *Store) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (claimed []webhooks.Attempt, more bool, err error) {
	err = s.inTx(ctx, func(tx *sqlx.Tx) error {
		claimed, more = nil, false
		if _, err := tx.ExecContext(ctx, sqlFailDeadEndpoints, c.Now); err != nil {
			return fmt.Errorf("fail deliveries of dead endpoints: %w", err)
		}
		type endpoint struct{ id, url, secret string }
		var live []endpoint
		rows, err := tx.QueryContext(ctx, `SELECT id, url, secret FROM webhook_endpoints
			WHERE enabled AND NOT deleted ORDER BY id COLLATE "C"`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var e endpoint
			if err := rows.Scan(&e.id, &e.url, &e.secret); err != nil {
				rows.Close()
				return err
			}
			live = append(live, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}

		type candidate struct {
			a       webhooks.Attempt
			due     int64
			message int64
		}
		var cands []candidate
		var renew []int64 // in flight here, lease run out: still ours
		for _, e := range live {
			free := c.FreeFor(e.id)
			if free <= 0 || c.Limit <= 0 {
				continue
			}
			rows, err := tx.QueryContext(ctx, sqlClaimEndpoint, e.id, c.Now, free+len(c.InFlight))
			if err != nil {
				return err
			}
			n := 0
			for rows.Next() {
				var k candidate
				k.a.EndpointID, k.a.URL, k.a.Secret = e.id, e.url, e.secret
				if err := rows.Scan(&k.a.DeliveryID, &k.a.Attempts, &k.a.CreatedAt, &k.due, &k.message); err != nil {
					rows.Close()
					return err
				}
				if c.InFlight[k.a.DeliveryID] {
					renew = append(renew, k.a.DeliveryID)
					continue
				}
				if n == free {
					continue
				}
				n++
				cands = append(cands, k)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		sort.Slice(cands, func(i, j int) bool {
			if cands[i].due != cands[j].due {
				return cands[i].due < cands[j].due
			}
			return cands[i].a.DeliveryID < cands[j].a.DeliveryID
		})
		if len(cands) > c.Limit {
			cands, more = cands[:max(c.Limit, 0)], true
		}
		for _, id := range renew {
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = $1 WHERE id = $2`,
				c.LeaseUntil, id); err != nil {
				return err
			}
		}
		for _, k := range cands {
			a := k.a
			var typ string
			if err := tx.QueryRowContext(ctx, `SELECT msg_id, type, payload FROM webhook_messages WHERE id = $1`,
				k.message).Scan(&a.MsgID, &typ, &a.Payload); err != nil {
				return fmt.Errorf("message of delivery %d: %w", a.DeliveryID, err)
			}
			a.Type = calls.HookType(typ)
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = $1 WHERE id = $2`,
				c.LeaseUntil, a.DeliveryID); err != nil {
				return err
			}
			claimed = append(claimed, a)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("db: claim webhook deliveries: %w", err)
	}
	return claimed, more, nil
}

// FinishWebhookAttempt records the outcome of an attempt and ends its
// lease. With o.DisableReason the endpoint is disabled and its other
// pending deliveries fail in the same transaction.
func (s *Store) FinishWebhookAttempt(ctx context.Context, o webhooks.Outcome) error {
	status, next, deliveredAt := webhooks.DeliveryFailed, int64(0), int64(0)
	switch {
	case o.Delivered:
		status, deliveredAt = webhooks.DeliveryDelivered, o.At
	case o.NextAttemptAt > 0 && o.DisableReason == "":
		status, next = webhooks.DeliveryPending, o.NextAttemptAt
	}
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1,
			last_status_code = $1, last_error = $2, status = $3, next_attempt_at = $4, delivered_at = $5,
			locked_until = 0 WHERE id = $6`,
			o.StatusCode, o.Error, string(status), next, deliveredAt, o.DeliveryID); err != nil {
			return err
		}
		if o.DisableReason == "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $1
			WHERE id = $2 AND enabled`, o.DisableReason, o.EndpointID); err != nil {
			return err
		}
		return failPending(ctx, tx, o.EndpointID, o.At, "endpoint disabled: "+o.DisableReason)
	})
	if err != nil {
		return fmt.Errorf("db: finish delivery %d: %w", o.DeliveryID, err)
	}
	return nil
}

// ReleaseWebhookDelivery ends the lease of an attempt abandoned without an
// outcome (shutdown), so the delivery is due again at once.
func (s *Store) ReleaseWebhookDelivery(ctx context.Context, deliveryID int64) error {
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = 0 WHERE id = $1`, deliveryID)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: release delivery %d: %w", deliveryID, err)
	}
	return nil
}

// NextWebhookDue returns, for each live endpoint with a pending delivery
// not leased at now, when its earliest one is due, and when the earliest
// lease running at now ends (0: none).
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

// PruneWebhookDeliveries deletes up to limit finished deliveries created
// before before (Unix ms) and the messages left without a delivery, in one
// transaction, and returns how many deliveries it deleted.
func (s *Store) PruneWebhookDeliveries(ctx context.Context, before int64, limit int) (int, error) {
	var n int
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
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
