package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/cluster"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
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

// presenceReports is a cluster.Service recording the presence reports a
// node's cluster presence makes.
type presenceReports struct {
	mu      sync.Mutex
	online  []string
	offline []string
}

func (r *presenceReports) MarkDelivered(context.Context, string, string, int64) error { return nil }

func (r *presenceReports) UserOnline(_ context.Context, userID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.online = append(r.online, userID)
	return nil
}

func (r *presenceReports) UserOffline(_ context.Context, userID string, _ time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.offline = append(r.offline, userID)
	return nil
}

func (r *presenceReports) offlineReports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(slices.Values(r.offline))
}

// countedChecks is a cluster.PresenceStore counting, per user, the
// "online on a live node" checks answered: a node's report of a user is
// past its check once the count moved.
type countedChecks struct {
	cluster.PresenceStore
	mu      sync.Mutex
	checked map[string]int
}

func (c *countedChecks) Online(ctx context.Context, user, except string) (bool, error) {
	on, err := c.PresenceStore.Online(ctx, user, except)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked[user]++
	return on, err
}

func (c *countedChecks) count(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked[user]
}

// A node restarted under the same id (CALLSIG_NODE_ID) after its process
// was killed holding streams: the dead process's rows stop counting as
// the new one joins, although the lease they hang on is renewed by it,
// and the users they held are reported offline unless a live node holds
// them, as a sweep of a dead node would. Before, the new process kept them
// online for ever (no sweep removes the rows of a live node, and it never
// deleted them, holding no stream of theirs), and the callers among them
// never had their grace armed.
func TestRestartUnderTheSameNodeIDDropsTheDeadProcessStreams(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{}) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	join := func(node string, store cluster.PresenceStore, reports *presenceReports) *cluster.Presence {
		t.Helper()
		// A lease no test outlasts: nothing here lapses or is swept.
		p, err := cluster.NewPresence(cluster.PresenceOptions{Store: store, Service: reports, Node: node, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Join(ctx); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The first process of n1 holds alice, bob and carol, n2 holds bob;
	// then n1's process is killed (no leave) and n1 starts again at once.
	first := join("n1", openPresence(t, dsn), &presenceReports{})
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := first.UserOnline(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	other := join("n2", openPresence(t, dsn), &presenceReports{})
	if err := other.UserOnline(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	first.Abandon()
	reports := &presenceReports{}
	checks := &countedChecks{PresenceStore: openPresence(t, dsn), checked: map[string]int{}}
	restarted := join("n1", checks, reports)
	// Carol's client reconnects to the new n1 before it reports.
	if err := restarted.UserOnline(ctx, "carol"); err != nil {
		t.Fatal(err)
	}

	table := openPresence(t, dsn)
	for _, tc := range []struct {
		user   string
		online bool
	}{
		{"alice", false}, // her only stream died with the first process
		{"bob", true},    // on n2
		{"carol", true},  // on the restarted n1
	} {
		on, err := table.Online(ctx, tc.user, "")
		if err != nil {
			t.Fatal(err)
		}
		if on != tc.online {
			t.Errorf("%s online on a live node = %v after n1 restarted, want %v", tc.user, on, tc.online)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Run reports the users the dead process left, once, as it starts:
	// alice, and carol but for her new stream (held here: not even looked
	// up in the table).
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { _ = restarted.Run(runCtx); close(ran) }()
	finish := sync.OnceFunc(func() {
		restarted.Abandon() // stop without leaving: leaving would report carol offline
		stop()
		<-ran // Run returns once its first reports are done
	})
	defer finish()
	wait.For(t, 10*time.Second, "the restarted n1 to report alice offline", func() bool {
		return slices.Contains(reports.offlineReports(), "alice")
	})
	finish()
	if got := reports.offlineReports(); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the restarted n1 reported offline %v, want [alice]: bob is on n2, carol on n1 again", got)
	}
	if n := checks.count("carol"); n != 0 {
		t.Errorf("carol, held by the restarted n1, looked up %d times, want none", n)
	}
}
