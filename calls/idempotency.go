package calls

import (
	"context"
	"errors"
	"fmt"
)

// Idempotency keys (the transport's Idempotency-Key) are recorded by the
// use-case itself, in the transaction of the change they guard: the change
// and the answer to replay commit together or not at all. A crash can then
// never leave a change without its record (a retry would apply it twice)
// nor a record without its change. Because the store serializes writes, a
// second request with the same key simply finds the first one's record
// inside its own transaction and replays it: no "in flight" state exists.

// StoredResponse is an answer as the transport sent it. Package calls
// stores and returns it without looking inside.
type StoredResponse struct {
	Status      int
	ContentType string
	Body        []byte
}

// IdempotencyRecord is what is kept under one key: the fingerprint of the
// request that used it first and the answer it got. Times are Unix ms of
// the transport's clock, which owns the keys' lifetime.
type IdempotencyRecord struct {
	Scope       string
	Key         string
	Fingerprint string
	Response    StoredResponse
	CreatedAt   int64
	ExpiresAt   int64
}

// ErrIdempotencyMismatch is returned by a use-case whose key was already
// used with another request (another fingerprint).
var ErrIdempotencyMismatch = errors.New("idempotency key was used with another request")

// Idempotency asks a use-case to run at most once per (Scope, Key): the
// transport puts it in the request's context (WithIdempotency) and reads
// the answer from Response once the use-case has returned. On a replay the
// use-case applies nothing and returns a nil result and a nil error; the
// answer is only in Response. The user actions (Invite, Cancel, Accept,
// Reject, CallingInvite, Join, Quit, End) honour it, and so do the webhook
// admin writes (webhooks.Registry.Create and Retry); the others ignore it.
type Idempotency struct {
	Scope       string
	Key         string
	Fingerprint string // identifies the request's content; another one under the same key is a mismatch
	// Also is a fingerprint a record may hold and still match (""): the
	// form an older version computed for the same request.
	Also      string
	Now       int64 // Unix ms: a record with ExpiresAt <= Now is ignored and replaced
	ExpiresAt int64 // Unix ms until which the new record is replayed
	// Encode turns the use-case's result into the answer that is stored
	// with the change and then sent. It runs inside the write transaction,
	// so it must be quick and do no I/O; an error rolls the change back.
	Encode func(result any) (StoredResponse, error)

	response *StoredResponse
	replayed bool
}

type idempotencyKey struct{}

// WithIdempotency returns ctx carrying i for the use-case it is passed to.
func WithIdempotency(ctx context.Context, i *Idempotency) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, i)
}

func idempotencyFrom(ctx context.Context) *Idempotency {
	i, _ := ctx.Value(idempotencyKey{}).(*Idempotency)
	return i
}

// Response returns the answer of a use-case that returned without error:
// the one stored with its change, or (replayed) the one an earlier request
// with the same key stored, in which case nothing was applied. ok is false
// when the use-case did not record an answer (it failed, or took no key).
func (i *Idempotency) Response() (resp StoredResponse, replayed, ok bool) {
	if i == nil || i.response == nil {
		return StoredResponse{}, false, false
	}
	return *i.response, i.replayed, true
}

// IdempotentRun is one write's view of the Idempotency its context carries,
// inside the write transaction: the call use-cases use it, and so does any
// other write a key may guard (the webhook admin writes of package
// webhooks), so the lookup and the record are written once. Every method is
// a no-op on a nil receiver, so a write calls them whether or not the
// request carried a key. The shape is always:
//
//	run := NewIdempotentRun(ctx)
//	err := store.Update(ctx, func(tx) error {
//		if replay, err := run.Recorded(ctx, tx); replay || err != nil {
//			return err // replay: apply nothing
//		}
//		... apply the change, build result ...
//		return run.Record(ctx, tx, result)
//	})
//	if err == nil { run.Committed() }
type IdempotentRun struct {
	i        *Idempotency
	response *StoredResponse
	replayed bool
}

// NewIdempotentRun returns the run of the Idempotency ctx carries, nil when
// it carries none.
func NewIdempotentRun(ctx context.Context) *IdempotentRun {
	if i := idempotencyFrom(ctx); i != nil {
		return &IdempotentRun{i: i}
	}
	return nil
}

// Recorded looks the key up in tx. It reports true when an earlier request
// holds it: then the write applies nothing and its answer is replayed. A
// record of another request under the key is ErrIdempotencyMismatch.
func (r *IdempotentRun) Recorded(ctx context.Context, tx IdempotencyTx) (bool, error) {
	if r == nil {
		return false, nil
	}
	r.response, r.replayed = nil, false // nothing of an earlier, failed run survives
	rec, err := tx.IdempotencyRecord(ctx, r.i.Scope, r.i.Key, r.i.Now)
	switch {
	case err != nil:
		return false, err
	case rec == nil:
		return false, nil
	case !r.i.Matches(rec.Fingerprint):
		return false, ErrIdempotencyMismatch
	}
	r.response, r.replayed = &rec.Response, true
	return true, nil
}

// Matches reports whether a record's fingerprint is this request's.
func (i *Idempotency) Matches(fingerprint string) bool {
	return fingerprint == i.Fingerprint || i.Also != "" && fingerprint == i.Also
}

// Record encodes result and stores it under the key in tx, beside the
// change the same transaction saves. An Encode error fails the write, so
// the change rolls back with it.
func (r *IdempotentRun) Record(ctx context.Context, tx IdempotencyTx, result any) error {
	if r == nil {
		return nil
	}
	resp, err := r.i.Encode(result)
	if err != nil {
		return fmt.Errorf("encode idempotent response: %w", err)
	}
	err = tx.PutIdempotencyRecord(ctx, IdempotencyRecord{
		Scope: r.i.Scope, Key: r.i.Key, Fingerprint: r.i.Fingerprint,
		Response: resp, CreatedAt: r.i.Now, ExpiresAt: r.i.ExpiresAt,
	})
	if err != nil {
		return err
	}
	r.response, r.replayed = &resp, false
	return nil
}

// Committed publishes the answer once the transaction is durable.
func (r *IdempotentRun) Committed() {
	if r != nil {
		r.i.response, r.i.replayed = r.response, r.replayed
	}
}
