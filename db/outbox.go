package db

// The dispatcher's side of the outbox, for every backend: filling it from
// Save, claiming due deliveries per endpoint, recording outcomes,
// releasing abandoned attempts.

import (
	"context"
	"database/sql"
	"fmt"
	"sort"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// Statement is one statement ready to run in a transaction: a prepared
// statement bound to it (SQLite's hot statements), or SQL text on it. It
// is a struct, not an interface, on purpose: a call through an interface
// would move every argument list to the heap, one allocation per statement
// on SQLite's write path.
type Statement struct {
	stmt  *sqlx.Stmt
	tx    *sqlx.Tx
	query string
}

// PreparedStatement is st, already bound to its transaction, as a Statement.
func PreparedStatement(st *sqlx.Stmt) Statement { return Statement{stmt: st} }

// TxStatement is query on tx, as a Statement.
func TxStatement(tx *sqlx.Tx, query string) Statement { return Statement{tx: tx, query: query} }

// QueryRowContext runs the statement for one row.
func (s Statement) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	if s.stmt != nil {
		return s.stmt.QueryRowContext(ctx, args...)
	}
	return s.tx.QueryRowContext(ctx, s.query, args...)
}

// QueryContext runs the statement for rows.
func (s Statement) QueryContext(ctx context.Context, args ...any) (*sql.Rows, error) {
	if s.stmt != nil {
		return s.stmt.QueryContext(ctx, args...)
	}
	return s.tx.QueryContext(ctx, s.query, args...)
}

// ExecContext runs the statement.
func (s Statement) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	if s.stmt != nil {
		return s.stmt.ExecContext(ctx, args...)
	}
	return s.tx.ExecContext(ctx, s.query, args...)
}

// QueueHook stores one webhook message and fans it out to the outbox: one
// pending delivery per enabled endpoint subscribed to its type, due at
// once. The caller has found that an endpoint is subscribed (a message
// nobody takes is not stored at all). The body is built by package
// webhooks, which owns its format; the store keeps the bytes. insert
// (msg id, type, call id, payload, created at) inserts the message
// RETURNING its id; fanOut (message id, due at, created at, type) inserts
// the deliveries.
func QueueHook(ctx context.Context, insert, fanOut Statement, h *calls.HookEvent) error {
	msg, err := webhooks.NewMessage(*h)
	if err != nil {
		return fmt.Errorf("db: %w", err)
	}
	var id int64
	err = insert.QueryRowContext(ctx, msg.ID, string(h.Type), h.CallID, msg.Payload, h.Time).Scan(&id)
	if err != nil {
		return fmt.Errorf("db: insert %s webhook: %w", h.Type, err)
	}
	if _, err := fanOut.ExecContext(ctx, id, h.Time, h.Time, string(h.Type)); err != nil {
		return fmt.Errorf("db: queue %s webhook: %w", h.Type, err)
	}
	return nil
}

// The outbox statements spelled alike everywhere, with ? placeholders.
const (
	sqlLeaseDelivery   = `UPDATE webhook_deliveries SET locked_until = ? WHERE id = ?`
	sqlReleaseDelivery = `UPDATE webhook_deliveries SET locked_until = 0 WHERE id = ?`
	sqlSelectMessage   = `SELECT msg_id, type, payload FROM webhook_messages WHERE id = ?`
	sqlFinishAttempt   = `UPDATE webhook_deliveries SET attempts = attempts + 1,
			last_status_code = ?, last_error = ?, status = ?, next_attempt_at = ?, delivered_at = ?,
			locked_until = 0 WHERE id = ?`
)

// ClaimWebhookDeliveries leases, for each live endpoint, up to its free
// share (c.FreeFor) of pending deliveries due at c.Now and not leased, until
// c.LeaseUntil, and returns at most c.Limit of them, earliest due first,
// ready to send. Pending deliveries of endpoints disabled or deleted
// meanwhile are failed on the way. more reports that c.Limit left due
// deliveries behind.
//
// Each endpoint is read on its own (WebhookSQL.ClaimEndpoint), so an
// endpoint with a large backlog costs the claim its share, never its
// backlog. Two claims never return the same delivery: SQLite's claims run
// one at a time on its single writer, PostgreSQL's take the rows FOR
// UPDATE SKIP LOCKED. The lease keeps a delivery from being claimed again,
// even by a process started after a crash, until the attempt is finished
// or released.
func (w Webhooks) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (claimed []webhooks.Attempt, more bool, err error) {
	err = w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		claimed, more = nil, false
		if _, err := tx.ExecContext(ctx, w.sql.FailDeadEndpoints, c.Now); err != nil {
			return fmt.Errorf("fail deliveries of dead endpoints: %w", err)
		}
		type endpoint struct{ id, url, secret string }
		var live []endpoint
		rows, err := tx.QueryContext(ctx, w.sql.LiveEndpoints)
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
			rows, err := tx.QueryContext(ctx, w.sql.ClaimEndpoint, e.id, c.Now, c.Now, free+len(c.InFlight))
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
		lease, message := tx.Rebind(sqlLeaseDelivery), tx.Rebind(sqlSelectMessage)
		for _, id := range renew {
			if _, err := tx.ExecContext(ctx, lease, c.LeaseUntil, id); err != nil {
				return err
			}
		}
		for _, k := range cands {
			a := k.a
			var typ string
			if err := tx.QueryRowContext(ctx, message, k.message).Scan(&a.MsgID, &typ, &a.Payload); err != nil {
				return fmt.Errorf("message of delivery %d: %w", a.DeliveryID, err)
			}
			a.Type = calls.HookType(typ)
			if _, err := tx.ExecContext(ctx, lease, c.LeaseUntil, a.DeliveryID); err != nil {
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
// lease: delivered, pending again at o.NextAttemptAt, or failed. With
// o.DisableReason the endpoint is disabled and its other pending deliveries
// fail in the same transaction.
func (w Webhooks) FinishWebhookAttempt(ctx context.Context, o webhooks.Outcome) error {
	status, next, deliveredAt := webhooks.DeliveryFailed, int64(0), int64(0)
	switch {
	case o.Delivered:
		status, deliveredAt = webhooks.DeliveryDelivered, o.At
	case o.NextAttemptAt > 0 && o.DisableReason == "":
		status, next = webhooks.DeliveryPending, o.NextAttemptAt
	}
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		if _, err := tx.ExecContext(ctx, tx.Rebind(sqlFinishAttempt),
			o.StatusCode, o.Error, string(status), next, deliveredAt, o.DeliveryID); err != nil {
			return err
		}
		if o.DisableReason == "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, w.sql.DisableEndpoint, o.DisableReason, o.EndpointID); err != nil {
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
func (w Webhooks) ReleaseWebhookDelivery(ctx context.Context, deliveryID int64) error {
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		_, err := tx.ExecContext(ctx, tx.Rebind(sqlReleaseDelivery), deliveryID)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: release delivery %d: %w", deliveryID, err)
	}
	return nil
}
