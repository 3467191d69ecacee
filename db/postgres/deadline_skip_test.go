package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"callsig/calls"
)

// A claim of due deadlines passes over a call another transaction holds
// (FOR UPDATE SKIP LOCKED): a request changing the call slowly, or another
// node firing it, holds up neither the claim nor the other due deadlines.
// Here the earliest due deadline's call is held while a claim runs: the
// claim hands out the other one and returns. Waiting for the held call
// instead (a mutation review: SKIP LOCKED dropped, every other PostgreSQL
// test passed), the claim sat behind the one slow transaction until the
// statement timeout and failed 503, every due deadline of the node with
// it, the calls claimed before it locked meanwhile.
func TestDeadlineClaimPassesOverAHeldCall(t *testing.T) {
	nodes, dsn := openNodes(t, 1)
	s := nodes[0]
	ctx := context.Background()
	held, free := started("held", "m1", "z1"), started("free", "m2", "z2")
	held.Call.Users[1].TimeoutAt = 20_000 // due first
	free.Call.Users[1].TimeoutAt = 30_000
	if err := s.Update(ctx, func(tx calls.Tx) error {
		if err := tx.Save(ctx, held); err != nil {
			return err
		}
		return tx.Save(ctx, free)
	}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	holder, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // rolled back when the test ends
	if _, err := holder.Exec(`SELECT 1 FROM calls WHERE id = 'held' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type claim struct {
		due []calls.Deadline
		err error
	}
	done := make(chan claim, 1)
	go func() {
		var got []calls.Deadline
		_, err := s.UpdateDue(ctx, 40_000, 10, func(_ calls.Tx, due []calls.Deadline) error {
			got = append(got[:0], due...)
			return nil
		})
		done <- claim{got, err}
	}()
	select {
	case c := <-done:
		if c.err != nil {
			t.Fatalf("UpdateDue: %v", c.err)
		}
		if len(c.due) != 1 || c.due[0].CallID != "free" {
			t.Fatalf("claimed %+v while the call held is locked, want only the free call's deadline", c.due)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the claim waited for a call another transaction holds instead of passing over it")
	}
}
