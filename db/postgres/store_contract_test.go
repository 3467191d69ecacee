package postgres_test

import (
	"context"
	"testing"
	"time"

	"callsig/db"
	"callsig/db/postgres"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
)

// TestContract runs the store contract suite on PostgreSQL: a fresh
// database per test, the default options but for event_users, walked at
// every pruning rather than hourly (the suite prunes and checks at once).
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) db.Store {
		s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{EventUsersSweepEvery: time.Nanosecond})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestContractBehindPgBouncer runs the suite through one PgBouncer in
// session mode, configured as docs/cluster.md says ("Behind PgBouncer"):
// every operation of the store works there. Skipped without pgbouncer.
func TestContractBehindPgBouncer(t *testing.T) {
	bouncer := postgres.StartPgBouncer(t, "session")
	storetest.Run(t, func(t *testing.T) db.Store {
		s, err := postgres.Open(context.Background(), postgres.ThroughPgBouncer(pgtest.NewDatabase(t), bouncer), postgres.Options{EventUsersSweepEvery: time.Nanosecond})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
