package postgres_test

import (
	"context"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

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

// A change to users only (a delivery mark) leaves the call's row as it
// is: Save sends no UPDATE for it (the row's xmin, the transaction that
// wrote its version, stays), while a change to the row (an accept ends
// presence_matters) writes it.
func TestSaveSkipsAnUnchangedCallRow(t *testing.T) {
	nodes, dsn := openNodes(t, 1)
	s := nodes[0]
	ctx := context.Background()
	raw, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	version := func() string {
		t.Helper()
		var xmin string
		if err := raw.Get(&xmin, `SELECT xmin::text FROM calls WHERE id = 'c1'`); err != nil {
			t.Fatal(err)
		}
		return xmin
	}
	change := func(f func(c *calls.Call) (*calls.Change, error)) {
		t.Helper()
		err := s.Update(ctx, func(tx calls.Tx) error {
			c, err := tx.Call(ctx, "c1")
			if err != nil {
				return err
			}
			ch, err := f(c)
			if err != nil {
				return err
			}
			return tx.Save(ctx, ch)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, started("c1", "alice", "bob")) }); err != nil {
		t.Fatal(err)
	}
	created := version()
	change(func(c *calls.Call) (*calls.Change, error) { return calls.Delivered(c, "bob", 0, 2_000), nil })
	if v := version(); v != created {
		t.Errorf("a delivery mark rewrote the call's row (xmin %s, then %s)", created, v)
	}
	if c, err := s.Call(ctx, "c1"); err != nil || c.User("bob").State != calls.StateReceived {
		t.Fatalf("after the mark: %+v, %v; want bob received", c, err)
	}
	change(func(c *calls.Call) (*calls.Change, error) {
		return calls.Answer(c, calls.Actor{UserID: "bob"}, true, "", 3_000)
	})
	if v := version(); v == created {
		t.Error("an accept left the call's row as it was: presence_matters is not written")
	}
}
