package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"callsig/internal/wait"
)

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

func (s *offlineReports) UserOffline(context.Context, string) error {
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
	p, err := NewPresence(PresenceOptions{Store: st, Service: svc, Node: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
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

// flakyOffline fails the first failN offline reports.
type flakyOffline struct {
	fakeService
	mu      sync.Mutex
	failN   int
	offline map[string]int
}

func (s *flakyOffline) UserOffline(_ context.Context, u string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failN > 0 {
		s.failN--
		return errFlapping
	}
	s.offline[u]++
	return nil
}

// A dead node's user whose offline report fails every quick retry (the
// database briefly out of reach) is reported later: the sweep removed the
// user's rows, and nothing else would ever report the user, whose calls
// would then never follow the caller-offline rule.
func TestSweptUserOfflineRetriedAfterFailures(t *testing.T) {
	st := &sweepingStore{fakeStore: newFakeStore(), users: []string{"caller"}}
	svc := &flakyOffline{fakeService: *newFakeService(), failN: 3, offline: map[string]int{}}
	p, err := NewPresence(PresenceOptions{Store: st, Service: svc, Node: "a", Lease: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait.For(t, 5*time.Second, "the offline report of the dead node's user", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return svc.offline["caller"] == 1
	})
}
