package webhooks

import (
	"context"
	"errors"

	"callsig/calls"
)

// Store is what the registry, the dispatcher and the retention pruner need
// from storage; every backend under db/ (db.Store) implements it.
type Store interface {
	// UpdateWebhooks runs fn in a write transaction: what fn writes commits
	// together, or nothing does when fn returns an error. It returns once
	// the commit is durable.
	UpdateWebhooks(ctx context.Context, fn func(Tx) error) error
	PutWebhookEndpoint(ctx context.Context, e *Endpoint) error
	WebhookEndpoints(ctx context.Context) ([]Endpoint, error)
	WebhookEndpoint(ctx context.Context, id string) (*Endpoint, error)
	DeleteWebhookEndpoint(ctx context.Context, id string, now int64) error
	// WebhookAttemptsInFlight counts the deliveries of an endpoint leased
	// at now (Unix ms): claimed by a dispatcher and not yet recorded.
	WebhookAttemptsInFlight(ctx context.Context, endpointID string, now int64) (int, error)
	WebhookDeliveries(ctx context.Context, endpointID string, q DeliveryQuery) ([]Delivery, error)

	// ClaimWebhookDeliveries leases due deliveries as c allows, renews the
	// run-out leases of c.InFlight, and fails the pending deliveries of
	// disabled or deleted endpoints.
	ClaimWebhookDeliveries(ctx context.Context, c Claim) (Claimed, error)
	// FinishWebhookAttempts records each outcome and ends its lease, all in
	// one transaction; lost[i] reports that outcomes[i] changed nothing,
	// its delivery no longer leased to its Lease (see ErrLeaseLost). An
	// error records none.
	FinishWebhookAttempts(ctx context.Context, outcomes []Outcome) (lost []bool, err error)
	// ReleaseWebhookDelivery ends the lease of an attempt abandoned without
	// an outcome, or changes nothing and fails with ErrLeaseLost when the
	// delivery is no longer leased to lease.
	ReleaseWebhookDelivery(ctx context.Context, deliveryID, lease int64) error
	// NextWebhookDue says when each live endpoint's earliest pending
	// delivery not leased at now is due, and when the next lease ends.
	NextWebhookDue(ctx context.Context, now int64) (Due, error)
	WebhookQueueStats(ctx context.Context) (pending int, oldest int64, err error)
	// PruneWebhookDeliveries deletes up to limit finished (delivered or
	// failed) deliveries created before before, and the messages no
	// delivery references any more; it returns how many deliveries went.
	PruneWebhookDeliveries(ctx context.Context, before int64, limit int) (int, error)
	// PurgeDeletedWebhookEndpoints deletes up to limit endpoints deleted
	// before deletedBefore (Unix ms) that no delivery refers to any more,
	// and returns how many; one deleted at no known time counts as
	// deleted at now.
	PurgeDeletedWebhookEndpoints(ctx context.Context, now, deletedBefore int64, limit int) (int, error)
	// ExpireWebhookDeliveries fails up to limit pending deliveries created
	// before createdBefore, due since before it too, and with no lease
	// running at leasedAt (their endpoint never took them: down, its
	// breaker open, or too slow for what it gets); it returns how many it
	// failed. One whose time is still to come (a Retry-After, an admin's
	// retry) is left alone.
	ExpireWebhookDeliveries(ctx context.Context, createdBefore, leasedAt int64, limit int) (int, error)
	// WebhookBacklogCut returns the id of the newest pending delivery of
	// an endpoint that is not among its keep newest pending ones: those
	// with an id up to it are its backlog beyond keep. It returns 0 when
	// the endpoint has keep pending deliveries or fewer.
	WebhookBacklogCut(ctx context.Context, endpointID string, keep int) (int64, error)
	// DropWebhookDeliveries fails up to limit pending deliveries of an
	// endpoint with an id up to upTo and no lease running at leasedAt,
	// with reason as their last error, and returns how many it failed.
	DropWebhookDeliveries(ctx context.Context, endpointID string, upTo, leasedAt int64, reason string, limit int) (int, error)
}

// Tx is the view of the store inside UpdateWebhooks: the admin writes an
// Idempotency-Key may guard, and the keys' records (calls.IdempotencyTx),
// so such a write stores its answer in the transaction of its change.
type Tx interface {
	calls.IdempotencyTx
	// InsertWebhookEndpoint registers a new endpoint, secret included.
	InsertWebhookEndpoint(ctx context.Context, e *Endpoint) error
	// WebhookEndpointCount returns how many endpoints are not deleted. It
	// holds back every other transaction that asks until this one ends, so
	// the count stays true until the insert it guards commits.
	WebhookEndpointCount(ctx context.Context) (int, error)
	// RetryWebhookDelivery puts a delivery of a live endpoint back to
	// pending, due at now, and returns it; calls.ErrNotFound when there is
	// no such delivery, calls.ErrDeliveryInFlight while an attempt holds its
	// lease at now, calls.ErrEndpointDisabled when its endpoint is disabled.
	RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*Delivery, error)
}

// Claim is what the dispatcher may take in one claim: each endpoint gets
// at most its share of attempts in flight, so a slow endpoint never holds
// every worker, and the whole claim at most the free workers.
type Claim struct {
	Now        int64 // Unix ms: deliveries due at or before it are claimable
	LeaseUntil int64 // Unix ms the leases of the claimed deliveries end
	Limit      int   // attempts to claim at most, over all endpoints
	// Share is how many attempts an endpoint not in Free may be given.
	Share int
	// Free overrides Share for endpoints with attempts in flight or a
	// circuit breaker not closed (0: claim nothing for it).
	Free map[string]int
	// Reserve is how many of Limit go only to endpoints with no attempt
	// in flight (Sending), one each: endpoints that hang hold at most
	// the workers outside the reserve, whatever their number, and an
	// endpoint that answers still gets an attempt at once.
	Reserve int
	// Sending counts per endpoint the attempts of this process waiting for
	// the receiver's answer (not those answered whose outcome is being
	// written).
	Sending map[string]int
	// InFlight are the deliveries this process is sending now, each with
	// the lease its attempt holds; a lease that ran out during a long
	// attempt (a clock jump) must not send one twice. Such a lease is
	// renewed for the attempt in flight (Claimed.Renewed), but only while
	// the delivery still holds that lease: an attempt that has just
	// recorded its outcome ended it, and renewing would hold a retry due
	// now back for a whole lease.
	InFlight map[int64]int64
}

// LeaseRunOut reports whether an attempt in flight holds a lease that
// ran out by Now: the claim must then renew it, even when it may take
// nothing new (every worker busy, the endpoint at its share), or another
// process would send the delivery again while the attempt goes on.
func (c Claim) LeaseRunOut() bool {
	for _, lease := range c.InFlight {
		if lease <= c.Now {
			return true
		}
	}
	return false
}

// FreeFor returns how many attempts the claim allows for an endpoint.
func (c Claim) FreeFor(endpointID string) int {
	if n, ok := c.Free[endpointID]; ok {
		return n
	}
	return c.Share
}

// Claimed is what one claim took.
type Claimed struct {
	// Attempts are the deliveries leased until Claim.LeaseUntil, at most
	// Claim.Limit of them, ready to send.
	Attempts []Attempt
	// Renewed are the deliveries of Claim.InFlight whose lease had run out
	// and is now theirs again until Claim.LeaseUntil: their attempts'
	// outcomes must carry that lease.
	Renewed []int64
	// More reports that Claim.Limit left due deliveries behind, or that
	// the claim failed deliveries of dead endpoints, a batch of which it
	// fails at most: either way, claim again.
	More bool
}

// ErrLeaseLost is the answer to an attempt's outcome or release when the
// delivery is no longer leased to that attempt: its lease ran out and
// another attempt (of another node, or after a restart) took the delivery
// over, or the delivery was finished, released or failed meanwhile. Nothing
// is written: only the lease holder's result counts, so a slow node's late
// result never ends a lease it lost nor overwrites the holder's outcome.
var ErrLeaseLost = errors.New("webhook delivery no longer leased to this attempt")

// Due is the outbox's schedule as NextWebhookDue reads it.
type Due struct {
	// Endpoints maps each live endpoint with a pending delivery not leased
	// at the time asked to the Unix ms its earliest one is due.
	Endpoints map[string]int64
	// LeaseEnd is the Unix ms the earliest lease running at the time asked
	// ends (0: none).
	LeaseEnd int64
}
