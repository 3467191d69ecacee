package db

// The outbox's schedule and retention, for every backend.

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/webhooks"
)

// NextWebhookDue returns, for each live endpoint with a pending delivery
// not leased at now, when its earliest one is due, and when the earliest
// lease running at now ends (0: none).
func (w Webhooks) NextWebhookDue(ctx context.Context, now int64) (webhooks.Due, error) {
	due := webhooks.Due{Endpoints: map[string]int64{}}
	err := w.read(ctx, func(tx *sqlx.Tx) error {
		rows, err := w.readStatement(tx, w.sql.NextDueByEndpoint).QueryContext(ctx, now)
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
		return w.readStatement(tx, w.sql.NextLeaseEnd).QueryRowContext(ctx, now).Scan(&due.LeaseEnd)
	})
	if err != nil {
		return webhooks.Due{}, fmt.Errorf("db: next webhook due: %w", err)
	}
	return due, nil
}

// ExpireWebhookDeliveries fails up to limit pending deliveries created
// before createdBefore (Unix ms), due before it too, and not leased at
// leasedAt, in one write transaction, and returns how many. Callers loop
// while a full batch came back.
func (w Webhooks) ExpireWebhookDeliveries(ctx context.Context, createdBefore, leasedAt int64, limit int) (int, error) {
	var n int64
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(w.statementCtx(ctx), w.sql.ExpireDeliveries, webhooks.ExpiredReason, createdBefore, leasedAt, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db: expire webhook deliveries: %w", err)
	}
	return int(n), nil
}

// PurgeDeletedWebhookEndpoints deletes up to limit endpoints deleted
// through the API before deletedBefore (Unix ms; kept as rows while their
// deliveries are, for the outbox's bookkeeping) once no delivery refers
// to them, and returns how many it deleted: every claim checks the dead
// endpoints, and an admin creating and deleting endpoints would otherwise
// grow that check (and the table) without end. An endpoint deleted with no
// deletion time recorded is given now as its time. deletedBefore leaves a
// margin for a write that read the endpoint as live before its deletion
// and has not committed its delivery yet (PostgreSQL): purged under it,
// that delivery would belong to no endpoint, and nothing would fail it.
func (w Webhooks) PurgeDeletedWebhookEndpoints(ctx context.Context, now, deletedBefore int64, limit int) (int, error) {
	var n int64
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		// A deletion of unknown time counts from now: purged at once, an
		// endpoint deleted a moment ago by an older node would open the
		// window deletedBefore is there to close.
		if _, err := tx.ExecContext(ctx, w.sql.StampDeleted, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, w.sql.PurgeEndpoints, deletedBefore, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db: purge deleted webhook endpoints: %w", err)
	}
	return int(n), nil
}

// PruneWebhookDeliveries deletes up to limit finished deliveries created
// before before (Unix ms) and the messages left without a delivery, in one
// write transaction, and returns how many deliveries it deleted. Pending
// deliveries are never pruned, however old. Callers loop while a full
// batch came back, so a backlog never holds a write transaction for long.
func (w Webhooks) PruneWebhookDeliveries(ctx context.Context, before int64, limit int) (int, error) {
	var n int
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		n = 0
		rows, err := tx.QueryContext(ctx, w.sql.PruneDeliveries, before, limit)
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
			if _, err := tx.ExecContext(ctx, w.sql.PruneMessage, m); err != nil {
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
