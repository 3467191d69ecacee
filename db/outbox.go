package db

// The dispatcher's side of the outbox, for every backend: filling it from
// Save, claiming due deliveries per endpoint, recording outcomes,
// releasing abandoned attempts.

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
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
//
// A lease is named by its end, locked_until: a claim takes only a delivery
// whose lease has ended (locked_until <= now) and writes a later end, so a
// lease taken over is always replaced by one that ends later. Finishing and
// releasing are fenced on it (AND locked_until = the attempt's lease): the
// late result of an attempt whose lease was taken over, or whose delivery
// was finished, released or failed since, matches no row.
const (
	sqlLeaseDelivery   = `UPDATE webhook_deliveries SET locked_until = ? WHERE id = ?`
	sqlRenewDelivery   = `UPDATE webhook_deliveries SET locked_until = ? WHERE id = ? AND locked_until = ? AND status = 'pending'`
	sqlReleaseDelivery = `UPDATE webhook_deliveries SET locked_until = 0 WHERE id = ? AND locked_until = ?`
	sqlSelectMessage   = `SELECT msg_id, type, payload FROM webhook_messages WHERE id = ?`
	sqlFinishAttempt   = `UPDATE webhook_deliveries SET attempts = attempts + 1,
			last_status_code = ?, last_error = ?, status = ?, next_attempt_at = ?, delivered_at = ?,
			locked_until = 0 WHERE id = ? AND locked_until = ?`
)

// pick returns what a claim takes of cands, sorted by due time: at most
// c.Limit, the last c.Reserve of them only first attempts of endpoints
// with none in flight; more reports that c.Limit left some behind (not
// the reserve: what it holds back waits for an attempt to end, which wakes
// the dispatcher).
func pick[T any](c webhooks.Claim, cands []T, endpoint func(T) string) (taken []T, more bool) {
	took := map[string]bool{}
	for _, k := range cands {
		if len(taken) >= c.Limit {
			return taken, true
		}
		id := endpoint(k)
		if (c.Sending[id] > 0 || took[id]) && len(taken) >= c.Limit-c.Reserve {
			continue
		}
		took[id] = true
		taken = append(taken, k)
	}
	return taken, false
}

// ClaimWebhookDeliveries leases, for each live endpoint, up to its free
// share (c.FreeFor) of pending deliveries due at c.Now and not leased, until
// c.LeaseUntil, and returns at most c.Limit of them, earliest due first
// but only first attempts in c.Reserve (pick), ready to send, each with its lease. Deliveries of c.InFlight found not
// leased are never returned as attempts; those still holding the lease of
// their attempt in flight (its lease ran out) are leased again for it and
// returned as Renewed. Pending deliveries of endpoints disabled or
// deleted meanwhile are failed on the way, up to db.FailBatch a claim.
// More reports that c.Limit left due deliveries behind, or that the claim
// failed some of those, and may have left more of them.
//
// Each endpoint is read on its own (WebhookSQL.ClaimEndpoint), so an
// endpoint with a large backlog costs the claim its share, never its
// backlog. Two claims never return the same delivery: SQLite's claims run
// one at a time on its single writer, PostgreSQL's take the rows FOR
// UPDATE SKIP LOCKED. The lease keeps a delivery from being claimed again,
// even by a process started after a crash, until the attempt is finished
// or released. c.LeaseUntil must be after c.Now: that is what makes each
// lease of a delivery end later than the one it takes over.
func (w Webhooks) ClaimWebhookDeliveries(ctx context.Context, c webhooks.Claim) (webhooks.Claimed, error) {
	if c.LeaseUntil <= c.Now {
		return webhooks.Claimed{}, fmt.Errorf("db: claim webhook deliveries: lease until %d does not end after now %d", c.LeaseUntil, c.Now)
	}
	var out webhooks.Claimed
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		out = webhooks.Claimed{}
		// The attempts in flight here whose lease ran out (a clock jump,
		// a paused process) are still ours: their leases are renewed
		// first, each by its id, whatever else the claim may take (the
		// endpoint at its share, every worker busy, other deliveries due
		// before it), so that no other process sends the delivery while
		// the attempt goes on, and the dead-endpoint sweep below leaves
		// it to its attempt. Fenced on the attempt's lease: an attempt
		// that finished just now (the dispatcher learns of it a moment
		// later) left the delivery unleased, due at once or later, and
		// is not renewed. In id order, as FinishWebhookAttempts writes:
		// two transactions locking the same rows in two orders deadlock
		// on PostgreSQL.
		renew := w.writeStatement(tx, tx.Rebind(sqlRenewDelivery))
		for _, id := range slices.Sorted(maps.Keys(c.InFlight)) {
			held := c.InFlight[id]
			if held > c.Now {
				continue
			}
			res, err := renew.ExecContext(ctx, c.LeaseUntil, id, held)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				out.Renewed = append(out.Renewed, id)
			}
		}
		res, err := w.writeStatement(tx, w.sql.FailDeadEndpoints).ExecContext(ctx, c.Now, FailBatch)
		if err != nil {
			return fmt.Errorf("fail deliveries of dead endpoints: %w", err)
		}
		swept, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("fail deliveries of dead endpoints: %w", err)
		}
		type endpoint struct{ id, url, secret string }
		var live []endpoint
		rows, err := w.writeStatement(tx, w.sql.LiveEndpoints).QueryContext(ctx)
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
		claimEndpoint := w.writeStatement(tx, w.sql.ClaimEndpoint)
		for _, e := range live {
			free := c.FreeFor(e.id)
			if free <= 0 || c.Limit <= 0 {
				continue
			}
			// Read past the deliveries in flight here, whose lease may have
			// run out (a clock jump): they are skipped, not sent twice.
			rows, err := claimEndpoint.QueryContext(ctx, e.id, c.Now, c.Now, free+len(c.InFlight))
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
				if _, ok := c.InFlight[k.a.DeliveryID]; ok {
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
		cands, out.More = pick(c, cands, func(k candidate) string { return k.a.EndpointID })
		// A sweep that failed some may have left more (a batch each):
		// claimed again at once, so a dead endpoint's backlog is failed
		// now, not only at claims that something else due brings, which
		// never come while no endpoint is live.
		out.More = out.More || swept > 0
		lease, message := w.writeStatement(tx, tx.Rebind(sqlLeaseDelivery)), w.writeStatement(tx, tx.Rebind(sqlSelectMessage))
		for _, k := range cands {
			a := k.a
			var typ string
			if err := message.QueryRowContext(ctx, k.message).Scan(&a.MsgID, &typ, &a.Payload); err != nil {
				return fmt.Errorf("message of delivery %d: %w", a.DeliveryID, err)
			}
			a.Type, a.Lease = calls.HookType(typ), c.LeaseUntil
			if _, err := lease.ExecContext(ctx, c.LeaseUntil, a.DeliveryID); err != nil {
				return err
			}
			out.Attempts = append(out.Attempts, a)
		}
		return nil
	})
	if err != nil {
		return webhooks.Claimed{}, fmt.Errorf("db: claim webhook deliveries: %w", err)
	}
	return out, nil
}

// FinishWebhookAttempts records the outcome of each attempt and ends its
// lease, all in one write transaction (one request to the store for every
// attempt that ended meanwhile, rather than one each): delivered, pending
// again at o.NextAttemptAt, or failed. With o.DisableReason the endpoint
// is disabled and its other pending deliveries fail in the same
// transaction, unless the endpoint's URL is no longer o.URL (reconfigured
// while the attempt ran): the old address's 410 then says nothing of the
// new one, and the delivery is due again at once, for the new address. An
// attempt that no longer holds the delivery's lease (o.Lease) writes
// nothing, the endpoint included, and is reported in lost: the lease
// holder's outcome is the one that counts. An error records none.
//
// The deliveries are written in id order, as a claim renews leases: in
// two orders, a claim and a batch locking the same rows on PostgreSQL
// deadlock, and one of them is aborted. The rows of the endpoints a 410
// disables are taken before any delivery's, as the put and the deletion
// of an endpoint take them.
func (w Webhooks) FinishWebhookAttempts(ctx context.Context, outcomes []webhooks.Outcome) (lost []bool, err error) {
	lost = make([]bool, len(outcomes))
	order := make([]int, len(outcomes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(outcomes[a].DeliveryID, outcomes[b].DeliveryID) })
	// The endpoints a 410 disables, in id order, before any delivery:
	// the put and the deletion of an endpoint take its row, then its
	// deliveries (to fail them), those whose leases ran out included.
	// Taken after the delivery of an outcome before them, the endpoint's
	// row closed a cycle with a put or a deletion waiting for that
	// delivery, and PostgreSQL aborted one side.
	var gone []string
	for _, o := range outcomes {
		if o.DisableReason != "" && o.URL != "" {
			gone = append(gone, o.EndpointID)
		}
	}
	slices.Sort(gone)
	gone = slices.Compact(gone)
	err = w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		for _, id := range gone {
			var url string
			if err := tx.QueryRowContext(ctx, w.sql.EndpointURL, id).Scan(&url); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("endpoint %s: %w", id, err)
			}
		}
		finish := w.writeStatement(tx, tx.Rebind(sqlFinishAttempt))
		for _, i := range order {
			o := outcomes[i]
			var err error
			if lost[i], err = w.finish(ctx, tx, finish, o); err != nil {
				return fmt.Errorf("delivery %d: %w", o.DeliveryID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("db: finish webhook deliveries: %w", err)
	}
	return lost, nil
}

// FinishWebhookAttempt is FinishWebhookAttempts for one outcome, lost
// as webhooks.ErrLeaseLost.
func (w Webhooks) FinishWebhookAttempt(ctx context.Context, o webhooks.Outcome) error {
	lost, err := w.FinishWebhookAttempts(ctx, []webhooks.Outcome{o})
	if err == nil && lost[0] {
		err = webhooks.ErrLeaseLost
	}
	return err
}

// finish records one outcome in tx (FinishWebhookAttempts); it runs
// again, from o as given, when the transaction does.
func (w Webhooks) finish(ctx context.Context, tx *sqlx.Tx, finish Statement, o webhooks.Outcome) (lost bool, err error) {
	status, next, deliveredAt := webhooks.DeliveryFailed, int64(0), int64(0)
	switch {
	case o.Delivered:
		status, deliveredAt = webhooks.DeliveryDelivered, o.At
	case o.NextAttemptAt > 0 && o.DisableReason == "":
		status, next = webhooks.DeliveryPending, o.NextAttemptAt
	}
	if o.DisableReason != "" && o.URL != "" {
		var url string
		err := tx.QueryRowContext(ctx, w.sql.EndpointURL, o.EndpointID).Scan(&url)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, err
		}
		if err == nil && url != o.URL {
			status, next, o.DisableReason = webhooks.DeliveryPending, o.At, ""
		}
	}
	res, err := finish.ExecContext(ctx, o.StatusCode, o.Error, string(status), next, deliveredAt, o.DeliveryID, o.Lease)
	if err != nil {
		return false, err
	}
	if lost, err = leaseLost(res); err != nil || lost {
		return lost, err
	}
	if o.DisableReason == "" {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, w.sql.DisableEndpoint, o.DisableReason, o.EndpointID); err != nil {
		return false, err
	}
	_, err = w.failPending(ctx, tx, o.EndpointID, o.At, "endpoint disabled: "+o.DisableReason)
	return false, err
}

// ReleaseWebhookDelivery ends the lease of an attempt that was abandoned
// without an outcome (shutdown), so the delivery is due again at once and
// the abandoned try does not count as an attempt. An attempt that no longer
// holds the delivery's lease writes nothing and gets webhooks.ErrLeaseLost:
// it must not end the lease of the attempt that took the delivery over.
func (w Webhooks) ReleaseWebhookDelivery(ctx context.Context, deliveryID, lease int64) error {
	lost := false
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		res, err := w.writeStatement(tx, tx.Rebind(sqlReleaseDelivery)).ExecContext(w.statementCtx(ctx), deliveryID, lease)
		if err != nil {
			return err
		}
		lost, err = leaseLost(res)
		return err
	})
	if err == nil && lost {
		err = webhooks.ErrLeaseLost
	}
	if err != nil {
		return fmt.Errorf("db: release delivery %d: %w", deliveryID, err)
	}
	return nil
}

// leaseLost reports that a statement fenced on an attempt's lease matched
// no row: the delivery is no longer leased to that attempt.
func leaseLost(res sql.Result) (bool, error) {
	n, err := res.RowsAffected()
	return n == 0, err
}
