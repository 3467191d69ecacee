package sqlite

// The dispatcher's side of the outbox: claiming due deliveries per
// endpoint, recording outcomes, releasing abandoned attempts.

import (
	"context"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// ClaimWebhookDeliveries leases, for each live endpoint, up to its free
// share (c.FreeFor) of pending deliveries due at c.Now and not leased, until
// c.LeaseUntil, and returns at most c.Limit of them, earliest due first,
// ready to send. Pending deliveries of endpoints disabled or deleted
// meanwhile are failed on the way. more reports that c.Limit left due
// deliveries behind.
//
// Each endpoint is read from its own range of webhook_deliveries_pending,
// so an endpoint with a large backlog costs the claim its share, never its
// backlog. The claim runs on the single writer, so two claims never return
// the same delivery; the lease keeps it from being claimed again, even by
// a process started after a crash, until the attempt is finished or
// released.
func (s *Store) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (claimed []webhooks.Attempt, more bool, err error) {
	err = s.write(ctx, func(tx *sqlx.Tx) error {
		claimed, more = nil, false
		if err := failDeadEndpoints(ctx, tx, c.Now); err != nil {
			return err
		}
		type endpoint struct{ id, url, secret string }
		var live []endpoint
		rows, err := tx.QueryContext(ctx, `SELECT id, url, secret FROM webhook_endpoints
			WHERE enabled = 1 AND deleted = 0 ORDER BY id`)
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
			// Read past the deliveries in flight here, whose lease may have
			// run out (a clock jump): they are skipped, not sent twice.
			rows, err := tx.QueryContext(ctx, sqlClaimEndpoint, e.id, c.Now, c.Now, free+len(c.InFlight))
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
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = ? WHERE id = ?`,
				c.LeaseUntil, id); err != nil {
				return err
			}
		}
		for _, k := range cands {
			a := k.a
			var typ string
			if err := tx.QueryRowContext(ctx, `SELECT msg_id, type, payload FROM webhook_messages WHERE id = ?`,
				k.message).Scan(&a.MsgID, &typ, &a.Payload); err != nil {
				return fmt.Errorf("message of delivery %d: %w", a.DeliveryID, err)
			}
			a.Type = calls.HookType(typ)
			if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = ? WHERE id = ?`,
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

// failDeadEndpoints fails the pending deliveries, not leased at now, of
// endpoints that were disabled or deleted: they will never be sent. Most
// are failed when the endpoint goes (failPending); these are the ones an
// attempt in flight then put back to pending. Each dead endpoint costs one
// probe of webhook_deliveries_pending.
func failDeadEndpoints(ctx context.Context, tx *sqlx.Tx, now int64) error {
	_, err := tx.ExecContext(ctx, sqlFailDeadEndpoints, now)
	if err != nil {
		return fmt.Errorf("fail deliveries of dead endpoints: %w", err)
	}
	return nil
}

// FinishWebhookAttempt records the outcome of an attempt and ends its
// lease: delivered, pending again at o.NextAttemptAt, or failed. With
// o.DisableReason the endpoint is disabled and its other pending deliveries
// fail in the same transaction.
func (s *Store) FinishWebhookAttempt(ctx context.Context, o webhooks.Outcome) error {
	status, next, deliveredAt := webhooks.DeliveryFailed, int64(0), int64(0)
	switch {
	case o.Delivered:
		status, deliveredAt = webhooks.DeliveryDelivered, o.At
	case o.NextAttemptAt > 0 && o.DisableReason == "":
		status, next = webhooks.DeliveryPending, o.NextAttemptAt
	}
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1,
			last_status_code = ?, last_error = ?, status = ?, next_attempt_at = ?, delivered_at = ?,
			locked_until = 0 WHERE id = ?`,
			o.StatusCode, o.Error, string(status), next, deliveredAt, o.DeliveryID); err != nil {
			return err
		}
		if o.DisableReason == "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?
			WHERE id = ? AND enabled = 1`, o.DisableReason, o.EndpointID); err != nil {
			return err
		}
		return failPending(ctx, tx, o.EndpointID, o.At, "endpoint disabled: "+o.DisableReason)
	})
	if err != nil {
		return fmt.Errorf("db: finish delivery %d: %w", o.DeliveryID, err)
	}
	return nil
}

// ReleaseWebhookDelivery ends the lease of an attempt that was abandoned
// without an outcome (shutdown), so the delivery is due again at once and
// the abandoned try does not count as an attempt.
func (s *Store) ReleaseWebhookDelivery(ctx context.Context, deliveryID int64) error {
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET locked_until = 0 WHERE id = ?`, deliveryID)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: release delivery %d: %w", deliveryID, err)
	}
	return nil
}
