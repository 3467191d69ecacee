package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// joined returns node "a" of store and svc, joined to the cluster.
func joined(t *testing.T, store PresenceStore, svc Service, lease time.Duration) *Presence {
	t.Helper()
	p, err := NewPresence(PresenceOptions{Store: store, Service: svc, Node: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	return p
}

// running runs p until the test ends.
func running(t *testing.T, p *Presence) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// sweepingStore is a fakeStore whose first SweepDead finds a dead node
// holding users, and which records when this node renewed its lease.
type sweepingStore struct {
	*fakeStore
	mu     sync.Mutex
	swept  bool
	users  []string
	renews []time.Time
}

func (s *sweepingStore) RenewLease(ctx context.Context, node string, lease time.Duration) (bool, error) {
	s.mu.Lock()
	s.renews = append(s.renews, time.Now())
	s.mu.Unlock()
	return s.fakeStore.RenewLease(ctx, node, lease)
}

func (s *sweepingStore) SweepDead(context.Context, string) (int, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.swept {
		return 0, nil, nil
	}
	s.swept = true
	return 1, s.users, nil
}

// offlineReports is a Service whose offline reports take delay each.
type offlineReports struct {
	fakeService
	delay time.Duration
}

func (s *offlineReports) UserOffline(context.Context, string, time.Time) error {
	time.Sleep(s.delay)
	return nil
}

// A node reporting a dead node's users offline (one transaction each, for
// longer than a lease) keeps renewing its own lease meanwhile: it renewed
// only between sweeps, its lease lapsed, and another node swept it and
// reported its connected users offline.
func TestSweepReportsDoNotHoldTheLease(t *testing.T) {
	st := &sweepingStore{fakeStore: newFakeStore()}
	for i := range 400 {
		st.users = append(st.users, fmt.Sprintf("u%d", i))
	}
	svc := &offlineReports{fakeService: *newFakeService(), delay: 20 * time.Millisecond}
	const lease = 300 * time.Millisecond
	p := joined(t, st, svc, lease)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond) // the reports take 1 s
	defer cancel()
	_ = p.Run(ctx)
	st.mu.Lock()
	defer st.mu.Unlock()
	var worst time.Duration
	for i := 1; i < len(st.renews); i++ {
		worst = max(worst, st.renews[i].Sub(st.renews[i-1]))
	}
	if worst > lease {
		t.Fatalf("the lease went %v without a renewal (lease %v) while the node reported a dead node's %d users offline", worst, lease, len(st.users))
	}
}

// flakyOffline fails the first failN offline reports, moving clock (when
// set) on by a minute at each, and records since when since is set.
type flakyOffline struct {
	fakeService
	clock   *fakeclock.Clock
	mu      sync.Mutex
	failN   int
	offline map[string]int
	since   map[string]time.Time // of the report made
}

func (s *flakyOffline) UserOffline(_ context.Context, u string, since time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failN > 0 {
		s.failN--
		if s.clock != nil {
			s.clock.Advance(time.Minute)
		}
		return errFlapping
	}
	s.offline[u]++
	if s.since != nil {
		s.since[u] = since
	}
	return nil
}

// A dead node's user whose offline report fails every quick retry (the
// database briefly out of reach) is reported later: the sweep removed the
// user's rows, and nothing else would ever report the user, whose calls
// would then never follow the caller-offline rule. The report made later
// says when the sweep found the user gone, so the grace is not put off by
// the outage.
func TestSweptUserOfflineRetriedAfterFailures(t *testing.T) {
	st := &sweepingStore{fakeStore: newFakeStore(), users: []string{"caller"}}
	swept := time.UnixMilli(1_000_000)
	clock := fakeclock.New(swept)
	svc := &flakyOffline{fakeService: *newFakeService(), clock: clock, failN: 3, offline: map[string]int{}, since: map[string]time.Time{}}
	p, err := NewPresence(PresenceOptions{Store: st, Service: svc, Node: "a", Lease: 150 * time.Millisecond, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	running(t, p)
	wait.For(t, 5*time.Second, "the offline report of the dead node's user", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return svc.offline["caller"] == 1
	})
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if got := svc.since["caller"]; !got.Equal(swept) {
		t.Fatalf("the retried report says offline since %v, want the sweep's %v (the clock is at %v)", got, swept, clock.Now())
	}
}

// seqSweepStore is a fakeStore whose SweepDead hands out batches of users
// of dead nodes, one a call.
type seqSweepStore struct {
	*fakeStore
	mu      sync.Mutex
	batches [][]string
	calls   int
}

func (s *seqSweepStore) SweepDead(context.Context, string) (int, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.batches) == 0 {
		return 0, nil, nil
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	return 1, b, nil
}

// slowFillers is a Service whose offline reports of users u… take delay
// each, and which lists the other users it was told are offline.
type slowFillers struct {
	fakeService
	delay   time.Duration
	mu      sync.Mutex
	offline []string
}

func (s *slowFillers) UserOffline(_ context.Context, u string, _ time.Time) error {
	if strings.HasPrefix(u, "u") {
		time.Sleep(s.delay)
		return nil
	}
	s.mu.Lock()
	s.offline = append(s.offline, u)
	s.mu.Unlock()
	return nil
}

// A node swept as dead while it reports a long sweep of its own writes
// its rows again at its next renewal, not after that sweep, and never
// reports offline a user it holds a stream of (a later sweep batch may
// name her, her row being gone).
func TestSweptDuringASweepWritesItsRowsAtOnce(t *testing.T) {
	var fillers []string
	for i := range 400 {
		fillers = append(fillers, fmt.Sprintf("u%d", i))
	}
	st := &seqSweepStore{fakeStore: newFakeStore(), batches: [][]string{fillers, {"alice"}}}
	svc := &slowFillers{fakeService: *newFakeService(), delay: 20 * time.Millisecond} // the sweep takes 1 s
	const lease = 300 * time.Millisecond
	p := joined(t, st, svc, lease)
	if err := p.UserOnline(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	running(t, p)
	wait.For(t, 2*time.Second, "the sweep to start", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.calls > 0
	})
	st.sweptBy("a", 0) // another node sweeps a
	swept := time.Now()
	wait.For(t, 5*time.Second, "alice's row written again", func() bool { return slices.Contains(st.users("a"), "alice") })
	if took := time.Since(swept); took > lease {
		t.Errorf("node a's rows were missing %v after it was swept (lease %v)", took, lease)
	}
	wait.For(t, 5*time.Second, "the sweep's end", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.batches) == 0
	})
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if len(svc.offline) > 0 {
		t.Fatalf("node a reported offline %v, a user it holds a stream of", svc.offline)
	}
}

// Offline reports still to be retried when the node stops gracefully get
// one last try as it leaves: nothing else would ever make them.
func TestLeaveTriesTheOfflineReportsLeft(t *testing.T) {
	st := &sweepingStore{fakeStore: newFakeStore(), users: []string{"caller"}}
	svc := &flakyOffline{fakeService: *newFakeService(), failN: 1 << 30, offline: map[string]int{}}
	p := joined(t, st, svc, time.Minute)
	p.round(t.Context()) // the sweep's report fails every try
	if _, ok := p.offlineAgain["caller"]; !ok {
		t.Fatalf("offlineAgain = %v, want caller", p.offlineAgain)
	}
	svc.mu.Lock()
	svc.failN = 0 // the database back as the node stops
	svc.mu.Unlock()
	p.leave(t.Context())
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.offline["caller"] != 1 {
		t.Fatalf("caller reported offline %d times at leave, want once", svc.offline["caller"])
	}
}

// A sweep that names a user this node holds a stream of (her row gone,
// this node swept before its renewal wrote it again) does not report her
// offline: the stream says she is online, whatever the rows say.
func TestSweepSkipsAUserHeldHere(t *testing.T) {
	st := &sweepingStore{fakeStore: newFakeStore(), users: []string{"alice"}}
	svc := &flakyOffline{fakeService: *newFakeService(), offline: map[string]int{}}
	p := joined(t, st, svc, time.Minute)
	if err := p.UserOnline(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	st.sweptBy("a", 0)
	p.round(t.Context())
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.offline["alice"] != 0 {
		t.Fatalf("alice, held here, reported offline %d times", svc.offline["alice"])
	}
}
