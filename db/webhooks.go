package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// Webhook endpoints and the outbox side the dispatcher drains. The rows are
// written by Save (insertHook, in outbox.go) in the transaction of the
// change that caused them; everything here runs after that commit.

const endpointColumns = `id, url, secret, event_types, description, created_at, enabled, disabled_reason`

// deliveryColumns are read from webhook_deliveries d joined with
// webhook_messages m.
const deliveryColumns = `d.id, d.endpoint_id, m.type, d.status, d.attempts, d.last_status_code,
	d.last_error, d.next_attempt_at, d.created_at, d.delivered_at`

// encodeEventTypes stores a type filter as ",a,b," (see the schema); no
// types is the empty string, which subscribes to every type.
func encodeEventTypes(types []calls.HookType) string {
	if len(types) == 0 {
		return ""
	}
	var b strings.Builder
	for _, t := range types {
		b.WriteString(",")
		b.WriteString(string(t))
	}
	b.WriteString(",")
	return b.String()
}

func decodeEventTypes(s string) []calls.HookType {
	types := []calls.HookType{}
	for _, t := range strings.Split(strings.Trim(s, ","), ",") {
		if t != "" {
			types = append(types, calls.HookType(t))
		}
	}
	return types
}

func scanEndpoint(sc scanner) (*webhooks.Endpoint, error) {
	var e webhooks.Endpoint
	var types string
	if err := sc.Scan(&e.ID, &e.URL, &e.Secret, &types, &e.Description, &e.CreatedAt, &e.Enabled, &e.DisabledReason); err != nil {
		return nil, err
	}
	e.EventTypes = decodeEventTypes(types)
	return &e, nil
}

func scanDelivery(sc scanner) (webhooks.Delivery, error) {
	var d webhooks.Delivery
	var id int64
	var typ, status string
	if err := sc.Scan(&id, &d.WebhookID, &typ, &status, &d.Attempts, &d.LastStatusCode,
		&d.LastError, &d.NextAttemptAt, &d.CreatedAt, &d.DeliveredAt); err != nil {
		return d, err
	}
	d.ID, d.Type, d.Status = strconv.FormatInt(id, 10), calls.HookType(typ), webhooks.DeliveryStatus(status)
	if d.Status != webhooks.DeliveryPending {
		d.NextAttemptAt = 0 // nothing is scheduled for a finished delivery
	}
	return d, nil
}

// InsertWebhookEndpoint registers a new endpoint, secret included.
func (s *Store) InsertWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	return s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_endpoints
			(id, url, secret, event_types, description, created_at, enabled, disabled_reason)
			VALUES (?, ?, ?, ?, ?, ?, 1, '')`,
			e.ID, e.URL, e.Secret, encodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
		if err != nil {
			return fmt.Errorf("db: insert webhook %s: %w", e.ID, err)
		}
		return nil
	})
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
			e.ID, e.URL, e.Secret, encodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
		if err != nil {
			return fmt.Errorf("db: put webhook %s: %w", e.ID, err)
		}
		return nil
	})
}

// WebhookEndpoints returns the live endpoints, oldest first, with secrets.
func (s *Store) WebhookEndpoints(ctx context.Context) ([]webhooks.Endpoint, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
		WHERE deleted = 0 ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("db: list webhooks: %w", err)
	}
	defer rows.Close()
	list := []webhooks.Endpoint{}
	for rows.Next() {
		e, err := scanEndpoint(rows)
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
	e, err := scanEndpoint(s.rdb.QueryRowContext(ctx, `SELECT `+endpointColumns+`
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
		query := `SELECT ` + deliveryColumns + ` FROM webhook_deliveries d
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
		defer rows.Close()
		for rows.Next() {
			d, err := scanDelivery(rows)
			if err != nil {
				return err
			}
			list = append(list, d)
		}
		return rows.Err()
	})
	if err != nil && calls.CodeOf(err) == "" {
		err = fmt.Errorf("db: list deliveries of %s: %w", endpointID, err)
	}
	return list, err
}

// RetryWebhookDelivery puts a delivery of a live endpoint back to pending,
// due at now, whatever its status, and returns it. Its attempt count is
// kept: a failed delivery retried by hand gets one more attempt. A lease
// held by an attempt in flight is left alone, so the retry never sends the
// delivery twice at the same time.
func (s *Store) RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*webhooks.Delivery, error) {
	var d webhooks.Delivery
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries
			SET status = 'pending', next_attempt_at = ?, delivered_at = 0
			WHERE id = ? AND endpoint_id = ?
			AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = endpoint_id AND e.deleted = 0)`,
			now, deliveryID, endpointID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return &calls.Error{Code: calls.CodeNotFound,
				Message: fmt.Sprintf("delivery %d of webhook %s not found", deliveryID, endpointID)}
		}
		d, err = scanDelivery(tx.QueryRowContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d
			JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = ?`, deliveryID))
		return err
	})
	if err != nil {
		if calls.CodeOf(err) == "" {
			err = fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
		}
		return nil, err
	}
	return &d, nil
}

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
