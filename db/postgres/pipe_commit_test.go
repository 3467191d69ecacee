package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
)

// A write that goes on past a failed statement it swallowed is not
// reported done: PostgreSQL answers its COMMIT with ROLLBACK, not an
// error, and the pipeline took that for a commit (a review: the change
// reported done, its events handed to streams, and not in the log).
func TestCommitOfAnAbortedTransactionFails(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	err := s.inPipeTx(ctx, func(p *pipe) error {
		var b pgx.Batch
		b.Queue(`SELECT 1/0`)
		p.queue(&b)
		_ = p.flush(ctx) // swallowed
		return nil
	})
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("inPipeTx after a failed statement = %v, want it unavailable", err)
	}
	if err := s.inPipeTx(ctx, func(p *pipe) error {
		var b pgx.Batch
		b.Queue(`SELECT 1`)
		p.queue(&b)
		return nil
	}); err != nil {
		t.Fatalf("a good transaction after it: %v", err)
	}
}
