package postgres_test

import (
	"context"
	"errors"
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
			ch := calls.Delivered(c, "bob", 0, 2000)
			if ch == nil || len(ch.Events) == 0 || len(ch.Hooks) == 0 {
				t.Fatalf("Delivered(%s, bob) = %+v, want a change with events and webhook messages", id, ch)
			}
			return tx.Save(ctx, ch)
		}
	}
	keyedCall := func(id, key string) func(tx calls.Tx) error {
		return func(tx calls.Tx) error {
			rec, err := tx.IdempotencyRecord(ctx, "alice POST /calls", key, 1000)
			if err != nil || rec != nil {
				t.Fatalf("IdempotencyRecord(%s) = %+v, %v; want none", key, rec, err)
			}
			if err := tx.Save(ctx, started(id, "alice", "bob")); err != nil {
				return err
			}
			return tx.PutIdempotencyRecord(ctx, keyRecord(key))
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
		if err := s.Update(ctx, keyedCall(id+"k", id)); err != nil {
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
		{"a keyed call: its key read, the call and the key's record saved", keyedCall("c4", "k1"), 2},
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
	if rec, err := s.LookupIdempotency(ctx, "alice POST /calls", "k1", 1000); err != nil || rec == nil || rec.Fingerprint != "fp" {
		t.Errorf("the keyed call's record: %+v, %v", rec, err)
	}
}

func keyRecord(key string) calls.IdempotencyRecord {
	return calls.IdempotencyRecord{Scope: "alice POST /calls", Key: key, Fingerprint: "fp",
		Response:  calls.StoredResponse{Status: 201, ContentType: "application/json", Body: []byte(`{}`)},
		CreatedAt: 1000, ExpiresAt: 9000}
}

// A record that goes with the commit cannot be checked in Go before it:
// when a live record holds the key (stored by a request that did not take
// the key's lock first), the statement fails in SQL, the whole change with
// it, and the answer is 503, never a change applied twice.
func TestKeyHeldMeanwhileFailsTheChange(t *testing.T) {
	nodes, _ := openNodes(t, 1)
	s := nodes[0]
	ctx := context.Background()
	if stored, err := s.PutIdempotency(ctx, keyRecord("k")); err != nil || !stored {
		t.Fatalf("PutIdempotency = %v, %v", stored, err)
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		if err := tx.Save(ctx, started("c1", "alice", "bob")); err != nil {
			return err
		}
		return tx.PutIdempotencyRecord(ctx, keyRecord("k"))
	})
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("Update with a held key = %v, want calls.ErrUnavailable", err)
	}
	if _, err := s.Call(ctx, "c1"); !errors.Is(err, calls.ErrCallNotFound) {
		t.Fatalf("the change of the failed Update: Call(c1) = %v, want ErrCallNotFound", err)
	}
}
