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
)

// orderedReports is a cluster.Service shared by the nodes of a test,
// recording the presence reports in the order they land; the first
// offline report is held until release is closed (entered is closed as
// it starts waiting).
type orderedReports struct {
	mu               sync.Mutex
	reports          []string
	entered, release chan struct{}
	once             sync.Once
}

func (r *orderedReports) MarkDelivered(context.Context, string, string, int64) error { return nil }

func (r *orderedReports) UserOnline(context.Context, string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, "online")
	return nil
}

func (r *orderedReports) UserOffline(context.Context, string, time.Time) error {
	r.once.Do(func() {
		close(r.entered)
		<-r.release
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, "offline")
	return nil
}

func (r *orderedReports) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reports)
}

// A user's last stream on node a closes, and a found no row of theirs on
// a live node, but before its offline report lands the user opens a
// stream on node b, whose online report lands first. The service's last
// word must be online: a's report reads the rows again once it is made,
// finds b's and reports online, which clears the grace its offline report
// armed. Without that second read (a mutation review: every other test
// passed), the last report was offline, and a connected caller's calls
// would end when the grace ran out.
func TestOfflineReportOvertakenByAnOnlineReportElsewhere(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{}) // migrates
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svc := &orderedReports{entered: make(chan struct{}), release: make(chan struct{})}
	node := func(name string, hub *localHub) *cluster.Presence {
		p, err := cluster.NewPresence(cluster.PresenceOptions{Store: openPresence(t, dsn), Service: svc, Node: name, Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		p.SetLocal(hub)
		if err := p.Join(t.Context()); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hubA, hubB := &localHub{}, &localHub{}
	a, b := node("a", hubA), node("b", hubB)
	ctx := t.Context()

	hubA.on.Store(true)
	if err := a.UserOnline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	hubA.on.Store(false)
	reported := make(chan error, 1)
	go func() { reported <- a.UserOffline(ctx, "alice", time.Now()) }()
	<-svc.entered // a found no row; its offline report is under way
	hubB.on.Store(true)
	if err := b.UserOnline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	close(svc.release)
	if err := <-reported; err != nil {
		t.Fatal(err)
	}
	got := svc.list()
	if len(got) == 0 || got[len(got)-1] != "online" {
		t.Errorf("presence reports of alice %v, want online last: she holds a stream on node b", got)
	}
}
