package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
)

// A session PostgreSQL ends on its own is "not now": the transaction did
// not commit and a retry may well succeed, so the Update's error is
// calls.ErrUnavailable (503), not an internal error (500). Here
// idle_in_transaction_session_timeout (a FATAL 25P03) ends it while fn
// waits inside the write transaction, as a slow presence check or
// scheduler may; it was a 500.
func TestUpdateWhoseSessionEndedIsUnavailable(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	// This test's own database only; sessions opened after it get the setting.
	_, err = conn.Exec(ctx, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = ''200ms''', current_database()); END $$")
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, started("c1", "alice", "bob")) }); err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, "c1")
		if err != nil {
			return err
		}
		time.Sleep(600 * time.Millisecond) // PostgreSQL ends the session meanwhile
		c.State = calls.CallEnded
		c.Users[1].State = calls.StateRejected
		c.Users[1].TimeoutAt = 0
		return tx.Save(ctx, &calls.Change{Call: c})
	})
	if err == nil {
		t.Fatal("Update committed after PostgreSQL ended its session")
	}
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("Update whose session PostgreSQL ended = %v, want calls.ErrUnavailable (503)", err)
	}
	if c, err := s.Call(ctx, "c1"); err != nil || c.State != calls.CallStarted {
		t.Fatalf("after the failed Update: Call(c1) = %+v, %v; want it still started", c, err)
	}
}
