package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/cluster"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
)

// heldRemoval is the presence tables with the next RemovePresence held
// until release is closed (entered is closed as it starts waiting): the
// moment in which an offline report of node a is under way.
type heldRemoval struct {
	*postgres.Presence
	entered, release chan struct{}
	once             sync.Once
}

func (s *heldRemoval) RemovePresence(ctx context.Context, node, user string) error {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Presence.RemovePresence(ctx, node, user)
}

// localHub is the SSE hub of a node as calls.Presence: whether it holds a
// stream of the user.
type localHub struct{ on atomic.Bool }

func (h *localHub) Online(string) bool { return h.on.Load() }

// offlineCount is a cluster.Service counting the offline reports it got.
type offlineCount struct{ offline atomic.Int64 }

func (*offlineCount) MarkDelivered(context.Context, string, string, int64) error { return nil }
func (*offlineCount) UserOnline(context.Context, string) error                   { return nil }
func (s *offlineCount) UserOffline(context.Context, string, time.Time) error {
	s.offline.Add(1)
	return nil
}

// A user whose last stream on node a closes and who opens one there again
// while the hub's offline report runs: the new stream subscribes to the
// hub, then announces itself (its row written before its headers go out),
// and the report's removal of the row comes after that write. The user
// holds a stream on a, so node b counts them online (the contract:
// "online while any node holds a stream") and the service is not told
// they went offline; before, b counted them offline, and the service was
// told so, until the hub's next report (the online one) wrote the row
// again.
func TestPresenceReopenedDuringTheOfflineReport(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{}) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	store := &heldRemoval{Presence: openPresence(t, dsn), entered: make(chan struct{}), release: make(chan struct{})}
	svc := &offlineCount{}
	node := func(name string, st cluster.PresenceStore, hub *localHub) *cluster.Presence {
		p, err := cluster.NewPresence(cluster.PresenceOptions{Store: st, Service: svc, Node: name, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		p.SetLocal(hub)
		if err := p.Join(t.Context()); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hubA := &localHub{}
	a := node("a", store, hubA)
	b := node("b", openPresence(t, dsn), &localHub{})
	ctx := t.Context()

	hubA.on.Store(true)
	if err := a.UserOnline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	// The last stream closes; the hub reports it.
	hubA.on.Store(false)
	reported := make(chan error, 1)
	go func() { reported <- a.UserOffline(ctx, "alice", time.Now()) }()
	<-store.entered
	// A new stream subscribes and announces itself meanwhile.
	hubA.on.Store(true)
	if err := a.Announce(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	close(store.release)
	if err := <-reported; err != nil {
		t.Fatal(err)
	}
	if on, err := b.CheckOnline(ctx, "alice"); err != nil || !on {
		t.Errorf("node b: alice online %v (%v), want true: she holds a stream on node a", on, err)
	}
	if n := svc.offline.Load(); n != 0 {
		t.Errorf("%d offline reports of alice, want none: she holds a stream on node a", n)
	}
}
