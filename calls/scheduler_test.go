package calls

import (
	"context"
	"testing"
)

// claimerOnly is a DeadlineClaimer that says nothing about batching.
type claimerOnly struct{}

func (claimerOnly) UpdateDue(context.Context, int64, int, func(Tx, []Deadline) error) (int, error) {
	return 0, nil
}

// batchingClaimer is a DeadlineClaimer with its own batching.
type batchingClaimer struct {
	claimerOnly
	parallel, batch int
}

func (b batchingClaimer) DeadlineBatching() (int, int) { return b.parallel, b.batch }

// The scheduler splits due deadlines as the store asks (DeadlineBatcher),
// and as for PostgreSQL when the store does not say, or says nonsense.
func TestClaimBatching(t *testing.T) {
	for _, tc := range []struct {
		name                string
		cl                  DeadlineClaimer
		parallel, batchSize int
	}{
		{"store says nothing", claimerOnly{}, claimParallel, claimBatch},
		{"store asks", batchingClaimer{parallel: 2, batch: 128}, 2, 128},
		{"no workers", batchingClaimer{parallel: 0, batch: 128}, claimParallel, claimBatch},
		{"empty batches", batchingClaimer{parallel: 2, batch: 0}, claimParallel, claimBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p, b := claimBatching(tc.cl); p != tc.parallel || b != tc.batchSize {
				t.Errorf("claimBatching = %d × %d, want %d × %d", p, b, tc.parallel, tc.batchSize)
			}
		})
	}
}
