package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/db/postgres"
	"callsig/internal/pgtest"
)

func openPresence(t *testing.T, dsn string) *postgres.Presence {
	t.Helper()
	p, err := postgres.OpenPresence(context.Background(), dsn, postgres.PresenceOptions{})
	if err != nil {
		t.Fatalf("OpenPresence: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// The presence tables as cluster.Presence uses them: a user is online
// while a live node holds a row; a node whose lease lapsed is swept once,
// by one of two nodes sweeping at the same time, and the sweep names the
// users left offline everywhere; a swept node's renewal says it was.
func TestPresenceLeasesAndSweep(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{}) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b, c := openPresence(t, dsn), openPresence(t, dsn), openPresence(t, dsn)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	online := func(p *postgres.Presence, user, except string) bool {
		t.Helper()
		on, err := p.Online(ctx, user, except)
		must(err)
		return on
	}

	if ins, err := a.RenewLease(ctx, "a", time.Minute); err != nil || !ins {
		t.Fatalf("first renewal: inserted %v, %v; want true", ins, err)
	}
	if ins, err := a.RenewLease(ctx, "a", time.Minute); err != nil || ins {
		t.Fatalf("second renewal: inserted %v, %v; want false", ins, err)
	}
	_, err = b.RenewLease(ctx, "b", time.Minute)
	must(err)
	must(a.AddPresence(ctx, "a", "alice"))
	must(a.AddPresence(ctx, "a", "alice")) // idempotent
	must(a.AddPresences(ctx, "a", []string{"bob", "carol"}))
	must(b.AddPresence(ctx, "b", "bob"))
	if !online(c, "alice", "") || online(c, "alice", "a") || online(c, "dave", "") {
		t.Fatal("Online: want alice online on a only, dave offline")
	}

	// Node a's lease lapses: its rows stop counting at once, before any sweep.
	_, err = a.RenewLease(ctx, "a", -time.Second)
	must(err)
	if online(c, "alice", "") || !online(c, "bob", "") {
		t.Fatal("after a's lease lapsed: want alice offline, bob online (on b)")
	}

	// b and c sweep at once: a is swept once; alice and carol (not bob, on
	// b) are named offline once in all.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		swept   int
		offline []string
	)
	for _, p := range []struct {
		p    *postgres.Presence
		self string
	}{{b, "b"}, {c, "c"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, off, err := p.p.SweepDead(ctx, p.self)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			swept += n
			offline = append(offline, off...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(offline)
	if swept != 1 || !slices.Equal(offline, []string{"alice", "carol"}) {
		t.Fatalf("sweeps removed %d nodes, offline %v; want 1 and [alice carol]", swept, offline)
	}
	// A node never sweeps itself, and a lapsed a renewing finds it was swept.
	if ins, err := a.RenewLease(ctx, "a", time.Minute); err != nil || !ins {
		t.Fatalf("renewal after the sweep: inserted %v, %v; want true", ins, err)
	}
	if online(c, "alice", "") {
		t.Fatal("alice online after a's rows were swept")
	}

	must(b.RemovePresence(ctx, "b", "bob"))
	if online(c, "bob", "") {
		t.Fatal("bob online after his only row was removed")
	}
	must(a.AddPresence(ctx, "a", "alice"))
	must(a.RemoveNode(ctx, "a"))
	if online(c, "alice", "") {
		t.Fatal("alice online after her node left")
	}
}
