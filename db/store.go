package db

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/webhooks"
)

// Store is everything the application needs from storage, whichever the
// backend: the ports of calls and webhooks, the event log the SSE hub reads
// (sse.Log), the Idempotency-Key records of the HTTP layer
// (handlers.IdempotencyStore) and their pruning, the metrics' counts, and
// the lifecycle. The methods of sse.Log and handlers.IdempotencyStore are
// spelled out rather than embedded: those packages' tests open a real
// store, and embedding would make them import this package back.
// internal/app proves each port is satisfied at compile time.
type Store interface {
	calls.Store
	webhooks.Store

	// The event log (sse.Log).
	EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error)
	PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error)
	UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error)
	EventRecipients(ctx context.Context, fromID, toID int64, limit int) (users []string, more bool, err error)
	OldestEventID(ctx context.Context) (int64, error)
	LastEventID(ctx context.Context) (int64, error)
	NewestEventIDs(ctx context.Context, users []string) (map[string]int64, error)
	PruneEvents(ctx context.Context, before int64) (int64, error)

	// Idempotency-Key records outside a change (handlers.IdempotencyStore)
	// and their retention (Pruner).
	LookupIdempotency(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error)
	PutIdempotency(ctx context.Context, rec calls.IdempotencyRecord) (bool, error)
	PruneIdempotency(ctx context.Context, before int64) (int64, error)

	// PruneCalls deletes the calls that ended before endedBefore (Unix
	// ms), with their users (the retention of ended calls, Pruner), and
	// returns how many calls it deleted.
	PruneCalls(ctx context.Context, endedBefore int64) (int64, error)

	// CallCounts returns how many calls are started and ended (the
	// callsig_calls gauge).
	CallCounts(ctx context.Context) (started, ended int64, err error)

	// Ping checks that the store answers, reads and writes (/readyz).
	Ping(ctx context.Context) error
	// Close finishes the writes already accepted and releases the store;
	// later calls fail with ErrClosed. Closing twice is harmless.
	Close() error
}

// ErrClosed is returned by reads and writes attempted after Close. It wraps
// calls.ErrUnavailable: a request that meets a store closing for shutdown
// is answered 503 and retried elsewhere or after the restart.
var ErrClosed = fmt.Errorf("db: store closed: %w", calls.ErrUnavailable)

// PanicError is the error of a write whose function panicked; the panic is
// contained to that request (in a group commit the others commit), and the
// write's changes are rolled back.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("db: write function panicked: %v", e.Value) }
