package db

// The bound on each endpoint's backlog, for every backend: a receiver
// that stays down must not grow the outbox's pending deliveries (and the
// work owed to it once back) without end.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	"github.com/jmoiron/sqlx"
)

// WebhookBacklogCut returns the id of the newest pending delivery of
// endpointID beyond its keep newest pending ones, or 0 when it has keep
// pending deliveries or fewer. It reads; the retention pass calls it
// once per endpoint and then drops up to the cut in batches
// (DropWebhookDeliveries). The count comes first: it reads the
// endpoint's range of the pending index alone, and no further than keep,
// so an endpoint within its bound (nearly all of them) costs no more than
// that, and one far beyond it no more than its bound.
func (w Webhooks) WebhookBacklogCut(ctx context.Context, endpointID string, keep int) (int64, error) {
	var cut int64
	err := w.read(ctx, func(tx *sqlx.Tx) error {
		var n int
		limit := keep
		if keep < math.MaxInt64 {
			limit++ // one past keep tells it passed
		}
		if err := tx.QueryRowContext(ctx, w.sql.PendingCount, endpointID, limit).Scan(&n); err != nil {
			return err
		}
		if n <= keep {
			return nil
		}
		err := tx.QueryRowContext(ctx, w.sql.BacklogCut, endpointID, keep).Scan(&cut)
		if errors.Is(err, sql.ErrNoRows) {
			// Delivered or dropped between the two reads (PostgreSQL's
			// read committed): within the bound after all.
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db: webhook backlog of %s: %w", endpointID, err)
	}
	return cut, nil
}

// DropWebhookDeliveries fails up to limit pending deliveries of endpointID
// with an id up to upTo and not leased at leasedAt, in one write
// transaction, with reason as their last error, and returns how many.
// Callers loop while a full batch came back, so a large backlog never
// holds the writer for long. A failed delivery leaves the pending index:
// each batch reads past only what it keeps.
func (w Webhooks) DropWebhookDeliveries(ctx context.Context, endpointID string, upTo, leasedAt int64, reason string, limit int) (int, error) {
	var n int64
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(w.statementCtx(ctx), w.sql.DropDeliveries, reason, endpointID, upTo, leasedAt, limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("db: drop webhook deliveries of %s: %w", endpointID, err)
	}
	return int(n), nil
}
