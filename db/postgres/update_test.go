package postgres_test

import (
	"context"
	"reflect"
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

// Calls loads several calls in one go, each as Call loads it, and leaves
// out an id that names no call.
func TestCallsLoadsSeveralAsCallDoes(t *testing.T) {
	nodes, _ := openNodes(t, 1)
	s := nodes[0]
	ctx := context.Background()
	for _, ch := range []*calls.Change{started("c1", "alice", "bob", "carol"), started("c2", "dave", "erin")} {
		if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		loader, ok := tx.(calls.CallsLoader)
		if !ok {
			t.Fatal("the PostgreSQL Tx is no calls.CallsLoader")
		}
		got, err := loader.Calls(ctx, []string{"c2", "nope", "c1"})
		if err != nil {
			return err
		}
		if len(got) != 2 || got["nope"] != nil {
			t.Errorf("Calls = %d calls (%v), want c1 and c2 only", len(got), got)
		}
		for _, id := range []string{"c1", "c2"} {
			one, err := tx.Call(ctx, id)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got[id], one) {
				t.Errorf("Calls gave %s as %+v, Call as %+v", id, got[id], one)
			}
		}
		if n := len(got["c1"].Users); n != 3 {
			t.Errorf("c1 loaded with %d users, want 3", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
