package postgres_test

import (
	"context"
	"testing"

	"callsig/calls"
)

// An Update whose ctx ends once fn has run still commits and says so, as
// SQLite's writer does once a write is under way: the transaction is not
// rolled back under the caller, so the answer always matches what is
// stored. A ctx done before the Update skips it.
func TestUpdateCommitsWhenCtxEndsAfterFn(t *testing.T) {
	nodes, _ := openNodes(t, 1)
	s := nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	err := s.Update(ctx, func(tx calls.Tx) error {
		if err := tx.Save(ctx, started("c1", "alice", "bob")); err != nil {
			return err
		}
		cancel() // the client goes away between the last statement and COMMIT
		return nil
	})
	if err != nil {
		t.Fatalf("Update = %v, want nil: fn succeeded", err)
	}
	if _, err := s.Call(context.Background(), "c1"); err != nil {
		t.Fatalf("Call(c1) after a successful Update: %v", err)
	}
	err = s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, started("c2", "alice", "bob")) })
	if err == nil {
		t.Fatal("Update with a done ctx succeeded")
	}
	if _, err := s.Call(context.Background(), "c2"); err == nil {
		t.Fatal("Update with a done ctx stored its change")
	}
}
