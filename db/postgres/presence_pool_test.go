package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db/postgres"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
)

// The presence pool's writes (a burst of reconnecting streams' rows, a
// sweep) never hold every connection: while as many of them as there are
// connections are stuck, here on a row lock, a request's "online
// anywhere" check (250 ms bound, unknown counts as offline) and the
// node's lease renewal still get one. Before, they waited for a
// connection until their time ran out: the check answered offline (an
// extra call.push_requested, a new call's caller left untracked) and a
// renewal that kept failing got a live node swept as dead.
func TestPresenceWritesLeaveAConnection(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{}) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := openPresence(t, dsn) // the default pool: 4 connections
	ctx := context.Background()
	if _, err := p.RenewLease(ctx, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := p.AddPresence(ctx, "a", "bob"); err != nil {
		t.Fatal(err)
	}

	// Another session inserts alice's row on a and holds it uncommitted:
	// every write of that row waits for it, holding its connection.
	other, err := sqlx.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	holder, err := other.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // released below
	if _, err := holder.ExecContext(ctx, `INSERT INTO presence (node_id, user_id) VALUES ('a', 'alice')`); err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := holder.GetContext(ctx, &pid, `SELECT pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}

	const writers = 8 // twice the pool
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.AddPresence(ctx, "a", "alice")
		}()
	}
	blocked := func() int {
		var n int
		if err := other.GetContext(ctx, &n, `SELECT COUNT(*) FROM pg_stat_activity
			WHERE $1 = ANY(pg_blocking_pids(pid))`, pid); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The writes take what they may: every connection but one.
	wait.For(t, 10*time.Second, "three writes waiting on the row lock", func() bool { return blocked() >= 3 })

	for i := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		on, err := p.Online(cctx, "bob", "")
		cancel()
		if err != nil || !on {
			t.Fatalf("check %d while the writes are stuck: online %v, %v; want true, nil", i, on, err)
		}
		rctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, err = p.RenewLease(rctx, "a", time.Minute)
		cancel()
		if err != nil {
			t.Fatalf("renewal %d while the writes are stuck: %v", i, err)
		}
	}
	if n := blocked(); n != 3 {
		t.Errorf("%d writes held a connection at once; want 3 (the pool but one)", n)
	}

	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a write once the lock was released: %v", err)
		}
	}
	if on, err := p.Online(ctx, "alice", ""); err != nil || !on {
		t.Fatalf("alice after the writes: online %v, %v; want true", on, err)
	}
}
