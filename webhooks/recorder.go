package webhooks

import (
	"context"
	"fmt"
	"time"
)

// maxOutcomeBatch bounds the outcomes one write records.
const maxOutcomeBatch = 256

// outcomeWriters is how many writes of outcomes may be under way at once:
// with one, outcomes that come in one by one (a receiver 20 ms away) each
// waited for the write before theirs and missed the group commits they
// had shared with claims, for more commits and more CPU per delivery
// (BenchmarkWebhookDrain); with a few they still join them.
const outcomeWriters = 4

// recordTimeout bounds one write of outcomes. It outlives the dispatcher's
// context: an answered attempt's outcome is worth keeping while shutting
// down too (the store closes after the dispatcher).
const recordTimeout = 10 * time.Second

// pendingOutcome is an answered attempt's outcome on its way to the store,
// and where its worker waits for the result.
type pendingOutcome struct {
	o    Outcome
	done chan error // buffered(1)
}

// finish records o through the recorder and returns its result:
// ErrLeaseLost when the store found the delivery no longer leased to
// o.Lease.
func (d *Dispatcher) finish(o Outcome) error {
	p := pendingOutcome{o: o, done: make(chan error, 1)}
	d.outcomes <- p
	return <-p.done
}

// recordOutcomes writes the outcomes sent on in until it is closed (one of
// outcomeWriters doing so): each write takes every outcome waiting (up to
// maxOutcomeBatch) in one request to the store, rather than one request
// each. A loaded node's attempts end faster than it commits, and each
// request costs SQLite's single writer a queue entry and a savepoint
// besides its one UPDATE: 42 % fewer write requests in a 600-cycles/s run
// with an all-events endpoint (docs/benchmarks.md).
func (d *Dispatcher) recordOutcomes(in <-chan pendingOutcome) {
	batch := make([]pendingOutcome, 0, maxOutcomeBatch)
	outcomes := make([]Outcome, 0, maxOutcomeBatch)
	for p := range in {
		batch, outcomes = append(batch[:0], p), append(outcomes[:0], p.o)
	more:
		for len(batch) < maxOutcomeBatch {
			select {
			case p, ok := <-in:
				if !ok {
					break more
				}
				batch, outcomes = append(batch, p), append(outcomes, p.o)
			default:
				break more
			}
		}
		results := d.writeOutcomes(outcomes)
		for i, p := range batch {
			p.done <- results[i]
		}
	}
}

// writeOutcomes records outcomes and returns each one's result: nil,
// ErrLeaseLost, or the store's error. When a write of several fails, each
// is written again on its own: one outcome the store refuses, or a write
// PostgreSQL aborted (a deadlock, a serialization failure), must not cost
// the others their outcome, whose deliveries would otherwise be sent
// again once their leases run out.
func (d *Dispatcher) writeOutcomes(outcomes []Outcome) []error {
	results := make([]error, len(outcomes))
	lost, err := d.finishAll(outcomes)
	if err != nil && len(outcomes) > 1 {
		for i := range outcomes {
			results[i] = d.writeOutcomes(outcomes[i : i+1])[0]
		}
		return results
	}
	for i := range outcomes {
		switch {
		case err != nil:
			results[i] = err
		case lost[i]:
			results[i] = ErrLeaseLost
		}
	}
	return results
}

// finishAll is the store's FinishWebhookAttempts, with its time bound and
// its answer checked.
func (d *Dispatcher) finishAll(outcomes []Outcome) ([]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	lost, err := d.store.FinishWebhookAttempts(ctx, outcomes)
	if err == nil && len(lost) != len(outcomes) {
		err = fmt.Errorf("webhooks: the store answered %d results for %d outcomes", len(lost), len(outcomes))
	}
	return lost, err
}
