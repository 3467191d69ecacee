package postgres_test

import (
	"context"
	"strings"
	"testing"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
)

// A write costs a round trip per answer its use-case waits for, and one
// for the commit: BEGIN rides on the first pipeline, and Save's writes on
// COMMIT's. On a loaded box the round trips were most of a change's cost
// (docs/benchmarks.md), so this is counted, on the wire, between the store
// and PostgreSQL.
func TestWritesCostOneRoundTripPerAnswer(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	proxy := testkit.StartTCPProxy(t, "127.0.0.1:5432")
	// One connection: nothing else of the store's talks meanwhile.
	s, err := postgres.Open(context.Background(), strings.Replace(dsn, "127.0.0.1:5432", proxy.Addr, 1), postgres.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	deliver := func(id string) func(tx calls.Tx) error {
		return func(tx calls.Tx) error {
			c, err := tx.Call(ctx, id)
			if err != nil {
				return err
			}
			ch := calls.Delivered(c, "bob", 2000)
			if ch == nil || len(ch.Events) == 0 || len(ch.Hooks) == 0 {
				t.Fatalf("Delivered(%s, bob) = %+v, want a change with events and webhook messages", id, ch)
			}
			return tx.Save(ctx, ch)
		}
	}
	// The first run of each statement on a connection prepares it, a round
	// trip of its own: warm up with the same writes first.
	for _, id := range []string{"w1", "w2"} {
		if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, started(id, "alice", "bob")) }); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, deliver(id)); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		name string
		fn   func(tx calls.Tx) error
		want int64
	}{
		{"a new call, saved", func(tx calls.Tx) error { return tx.Save(ctx, started("c1", "alice", "bob")) }, 1},
		{"a call loaded, changed and saved", deliver("c1"), 2},
		{"two calls saved", func(tx calls.Tx) error {
			if err := tx.Save(ctx, started("c2", "carol", "dave")); err != nil {
				return err
			}
			return tx.Save(ctx, started("c3", "erin", "frank"))
		}, 1},
		{"nothing", func(calls.Tx) error { return nil }, 0},
	}
	for _, tc := range cases {
		before := proxy.Turns()
		if err := s.Update(ctx, tc.fn); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := proxy.Turns() - before; got != tc.want {
			t.Errorf("%s: %d round trips, want %d", tc.name, got, tc.want)
		}
	}
	if _, err := s.Call(ctx, "c3"); err != nil {
		t.Errorf("the last of two saved calls: %v", err)
	}
}
