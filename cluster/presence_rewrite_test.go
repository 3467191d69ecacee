package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"
)

// errFlapping is what the fakes answer while the database is out of reach.
var errFlapping = errors.New("database out of reach")

// fakeStore is a PresenceStore in memory with the semantics of
// db/postgres.Presence (idempotent writes; RenewLease tells a re-inserted
// row), where a test can sweep a node and make the next AddPresences fail.
type fakeStore struct {
	mu       sync.Mutex
	nodes    map[string]bool                // nodes with a lease row
	rows     map[string]map[string]struct{} // node -> users
	failAdds int                            // AddPresences calls left to fail
}

func newFakeStore() *fakeStore {
	return &fakeStore{nodes: map[string]bool{}, rows: map[string]map[string]struct{}{}}
}

func (s *fakeStore) RenewLease(_ context.Context, node string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inserted := !s.nodes[node]
	s.nodes[node] = true
	return inserted, nil
}

func (s *fakeStore) AddPresence(_ context.Context, node, user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(node, user)
	return nil
}

func (s *fakeStore) AddPresences(_ context.Context, node string, users []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAdds > 0 {
		s.failAdds--
		return errFlapping
	}
	for _, u := range users {
		s.add(node, u)
	}
	return nil
}

func (s *fakeStore) add(node, user string) {
	if s.rows[node] == nil {
		s.rows[node] = map[string]struct{}{}
	}
	s.rows[node][user] = struct{}{}
}

func (s *fakeStore) RemovePresence(_ context.Context, node, user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rows[node], user)
	return nil
}

func (s *fakeStore) Online(_ context.Context, user, except string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for node, users := range s.rows {
		if _, ok := users[user]; ok && node != except && s.nodes[node] {
			return true, nil
		}
	}
	return false, nil
}

func (s *fakeStore) SweepDead(context.Context, string) (int, []string, error) {
	return 0, nil, nil
}

func (s *fakeStore) RemoveNode(_ context.Context, node string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, node)
	delete(s.rows, node)
	return nil
}

func (s *fakeStore) ClearNode(_ context.Context, node string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rows, node)
	return nil, nil
}

// sweptBy deletes node's lease row and presence rows, as another node's
// sweep does when node's lease lapsed, and makes the next failAdds
// AddPresences fail (the database still flapping).
func (s *fakeStore) sweptBy(node string, failAdds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAdds = failAdds
	delete(s.nodes, node)
	delete(s.rows, node)
}

// users lists node's rows.
func (s *fakeStore) users(node string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.rows[node]))
}

// fakeService counts the online reports per user, and fails those of the
// users in fail as many times as given.
type fakeService struct {
	mu     sync.Mutex
	online map[string]int
	fail   map[string]int
}

func newFakeService() *fakeService {
	return &fakeService{online: map[string]int{}, fail: map[string]int{}}
}

func (s *fakeService) MarkDelivered(context.Context, string, string, int64) error { return nil }

func (s *fakeService) UserOnline(_ context.Context, user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail[user] > 0 {
		s.fail[user]--
		return errFlapping
	}
	s.online[user]++
	return nil
}

func (s *fakeService) UserOffline(context.Context, string, time.Time) error { return nil }

// reports returns the online reports counted so far, and starts a new
// count.
func (s *fakeService) reports() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.online
	s.online = map[string]int{}
	return r
}

// rewriteNode is node "a" of a fake store and service, holding streams of
// alice, bob and carol; the online reports made so far are not counted.
type rewriteNode struct {
	t     *testing.T
	p     *Presence
	store *fakeStore
	svc   *fakeService
}

var rewriteUsers = []string{"alice", "bob", "carol"}

func newRewriteNode(t *testing.T) *rewriteNode {
	t.Helper()
	n := &rewriteNode{t: t, store: newFakeStore(), svc: newFakeService()}
	p, err := NewPresence(PresenceOptions{Store: n.store, Service: n.svc, Node: "a", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	n.p = p
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, u := range rewriteUsers {
		if err := p.UserOnline(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	n.svc.reports()
	return n
}

// renew runs one renewal and one round of the work loop, then checks node
// a's rows and the online reports made during them.
func (n *rewriteNode) renew(step string, rows []string, reports map[string]int) {
	n.t.Helper()
	n.p.renew(n.t.Context())
	n.p.round(n.t.Context())
	if got := n.store.users("a"); !slices.Equal(got, rows) {
		n.t.Fatalf("%s: rows of node a = %v, want %v", step, got, rows)
	}
	if got := n.svc.reports(); !maps.Equal(got, reports) {
		n.t.Fatalf("%s: online reports = %v, want %v", step, got, reports)
	}
}

// TestRenewRewritesPresenceUntilDone checks that a node which finds its
// lease row re-inserted (swept as dead while the database was out of its
// reach) keeps writing its users' rows again and reporting them online on
// every renewal until both have succeeded: the renewal after a failed
// attempt finds the row there, and nothing else would ever write them, so
// the users would count offline on every other node while connected.
func TestRenewRewritesPresenceUntilDone(t *testing.T) {
	all := map[string]int{"alice": 1, "bob": 1, "carol": 1}
	none := map[string]int{}

	t.Run("rows write fails", func(t *testing.T) {
		n := newRewriteNode(t)
		n.store.sweptBy("a", 1)
		n.renew("renewal finding the row re-inserted, rows write failing", nil, none)
		n.renew("next renewal", rewriteUsers, all)
		n.renew("renewal once done", rewriteUsers, none)
	})

	t.Run("online report fails", func(t *testing.T) {
		n := newRewriteNode(t)
		n.store.sweptBy("a", 0)
		n.svc.mu.Lock()
		n.svc.fail["bob"] = 2
		n.svc.mu.Unlock()
		n.renew("renewal finding the row re-inserted, bob's report failing", rewriteUsers, map[string]int{"alice": 1, "carol": 1})
		n.renew("next renewal, bob's report failing again", rewriteUsers, none)
		n.renew("third renewal", rewriteUsers, map[string]int{"bob": 1})
		n.renew("renewal once done", rewriteUsers, none)
	})

	t.Run("user leaves meanwhile", func(t *testing.T) {
		n := newRewriteNode(t)
		n.store.sweptBy("a", 1)
		n.renew("renewal finding the row re-inserted, rows write failing", nil, none)
		if err := n.p.UserOffline(t.Context(), "carol", time.Now()); err != nil {
			t.Fatal(err)
		}
		n.renew("renewal after carol left", []string{"alice", "bob"}, map[string]int{"alice": 1, "bob": 1})
	})
}

// hangingAdds is a fakeStore whose next AddPresences waits until its
// context ends: the rows' write queued behind other presence writes.
type hangingAdds struct {
	*fakeStore
	hang chan struct{} // closed: the next AddPresences has hung
}

func (s *hangingAdds) AddPresences(ctx context.Context, node string, users []string) error {
	select {
	case <-s.hang:
		return s.fakeStore.AddPresences(ctx, node, users)
	default:
	}
	close(s.hang)
	<-ctx.Done()
	return ctx.Err()
}

// A renewal that writes the rows again after a sweep bounds that write as
// it bounds itself: one that hangs must not hold the next renewals until
// the lease lapses again. The next renewal writes them.
func TestRenewDoesNotWaitForAHangingRewrite(t *testing.T) {
	store := &hangingAdds{fakeStore: newFakeStore(), hang: make(chan struct{})}
	svc := newFakeService()
	const lease = 300 * time.Millisecond
	p, err := NewPresence(PresenceOptions{Store: store, Service: svc, Node: "a", Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, u := range rewriteUsers {
		if err := p.UserOnline(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	store.sweptBy("a", 0)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		p.renew(t.Context())
	}()
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("the renewal waited for the rows' write past its own bound (lease/3)")
	}
	<-store.hang
	if got := store.users("a"); len(got) != 0 {
		t.Fatalf("rows of node a after the hanging write: %v, want none", got)
	}
	p.renew(t.Context())
	if got := store.users("a"); !slices.Equal(got, rewriteUsers) {
		t.Fatalf("rows of node a after the next renewal: %v, want %v", got, rewriteUsers)
	}
}
