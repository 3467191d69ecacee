package webhooks

import (
	"context"
	"fmt"
)

// DroppedReason is the last error of a delivery failed unsent because its
// endpoint had more than limit pending deliveries newer than it.
func DroppedReason(limit int) string {
	return fmt.Sprintf("dropped: the endpoint's backlog passed its limit of %d pending deliveries", limit)
}

// dropBacklog fails, for each endpoint with more than maxPending pending
// deliveries, the oldest beyond them, one bounded batch per write, and
// logs what it dropped once a pass. The newest are kept: they are the
// most current state of their calls, and an event queued as the receiver
// comes back is never the one dropped. A delivery whose attempt is in
// flight (leased, up to expireLeaseMargin after its lease) is left to its
// attempt, as the expiry leaves it, so the bound holds up to the
// endpoint's share of attempts in flight. A delivery an admin retries
// counts in the backlog like any other.
//
// It runs in the retention's pass, never on the write of a change: a
// user's request costs nothing more for it, and fails for nothing it
// does. The cut is read once per endpoint and pass (deliveries queued
// meanwhile are newer, never dropped by it); each endpoint within its
// bound costs one count of its range of the pending index. An error is
// logged, and leaves the other endpoints and the rest of the pass to run.
func (r *Retention) dropBacklog(ctx context.Context) {
	endpoints, err := r.store.WebhookEndpoints(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Error("webhooks: endpoints for their backlog", "err", err)
		}
		return
	}
	now := r.clock.Now()
	leasedAt := now.Add(-expireLeaseMargin).UnixMilli()
	reason := DroppedReason(r.maxPending)
	total := 0
	var over []string
	for _, e := range endpoints {
		n, err := r.dropBacklogOf(ctx, e.ID, leasedAt, reason)
		total += n
		if n > 0 {
			over = append(over, e.ID)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// One endpoint's failure leaves the others' bounds, and the
			// rest of the pass (the pruning), to run.
			r.log.Error("webhooks: drop an endpoint's backlog", "endpoint", e.ID, "err", err)
		}
	}
	if total > 0 {
		r.log.Warn("webhook deliveries dropped: endpoint backlogs passed their limit", "failed", total,
			"limit", r.maxPending, "endpoints", over)
	}
}

// dropBacklogOf fails an endpoint's pending deliveries beyond the newest
// maxPending (see dropBacklog) and returns how many.
func (r *Retention) dropBacklogOf(ctx context.Context, endpointID string, leasedAt int64, reason string) (int, error) {
	cut, err := r.store.WebhookBacklogCut(ctx, endpointID, r.maxPending)
	if err != nil || cut == 0 {
		return 0, err
	}
	total := 0
	for {
		n, err := r.store.DropWebhookDeliveries(ctx, endpointID, cut, leasedAt, reason, r.batch)
		total += n
		r.dropped.Add(float64(n))
		if err != nil || n < r.batch {
			return total, err
		}
	}
}
