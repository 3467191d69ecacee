package sse

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/wait"
)

// announceRows stands for the cluster presence table as cluster.Presence writes
// it: Announce and UserOnline add this node's row of the user, UserOffline
// deletes it. UserOnline of "blocker" blocks until released (a report
// slow because the store is, holding the hub's worker).
type announceRows struct {
	mu      sync.Mutex
	rows    map[string]bool
	release chan struct{}
	entered chan struct{}
}

func (z *announceRows) set(u string, on bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if on {
		z.rows[u] = true
	} else {
		delete(z.rows, u)
	}
}

func (z *announceRows) has(u string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.rows[u]
}

func (z *announceRows) MarkDelivered(context.Context, string, string, int64) error { return nil }
func (z *announceRows) UserOnline(_ context.Context, u string) error {
	if u == "blocker" {
		z.entered <- struct{}{}
		<-z.release
	}
	z.set(u, true)
	return nil
}
func (z *announceRows) UserOffline(_ context.Context, u string, _ time.Time) error {
	z.set(u, false)
	return nil
}

// A stream that opens and closes while the hub's presence workers are busy
// (here: one worker, held by a slow report) leaves no presence row behind.
// Its announcement wrote the row before the headers, and its online and
// offline reports cancel out in the work queue; the row used to stay, and
// the user counted online on every node for as long as this node lived.
func TestAnnouncedRowIsDeletedWhenReportsCoalesce(t *testing.T) {
	z := &announceRows{rows: map[string]bool{}, release: make(chan struct{}), entered: make(chan struct{}, 1)}
	release := sync.OnceFunc(func() { close(z.release) })
	defer release()
	hub, err := New(context.Background(), Options{Log: newMemLog(), Service: z, Workers: 1,
		IDOrder: PerUserIDOrder,
		Announce: func(_ context.Context, u string) error {
			z.set(u, true)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- hub.Run(ctx) }()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		hub.ServeEvents(w, req, q.Get("user"), q.Get("device"), 0)
	}))
	defer func() {
		release()
		hub.Shutdown()
		srv.Close()
		cancel()
		<-ran
	}()
	r := &rig{t: t, hub: hub, srv: srv}

	blocker := r.open("blocker", "d", "")
	blocker.raw()
	<-z.entered // the only worker is busy with blocker's report

	alice := r.open("alice", "d", "")
	alice.raw() // open: announced
	if !z.has("alice") {
		t.Fatal("setup: alice's row not announced")
	}
	alice.close()
	wait.For(t, 3*time.Second, "alice's stream gone", func() bool { return !hub.Online("alice") })

	release()
	wait.For(t, 3*time.Second, "blocker reported", func() bool { return z.has("blocker") })
	wait.For(t, 3*time.Second, "alice's announced row deleted", func() bool { return !z.has("alice") })
}

// An announcement queues a report only when no report made or in flight
// is "online": otherwise going offline is reported anyway, and a stream
// opening for a user already online costs no write.
func TestAnnouncedQueuesOnlyWhenUnaccounted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		st    *presenceState // nil: no state
		queue bool
	}{
		{"no state yet", nil, true},
		{"online and reported", &presenceState{want: true, applied: true}, false},
		{"online report in flight", &presenceState{want: true, busy: true, reporting: true}, false},
		{"offline report in flight", &presenceState{want: true, busy: true, dirty: true}, false}, // requeued when it ends
		{"online report queued, not begun", &presenceState{want: true, dirty: true, queued: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWork(slog.New(slog.DiscardHandler), nil, nil)
			if tc.st != nil {
				w.users["u"] = tc.st
				if tc.st.queued {
					w.queue = []string{"u"}
				}
			}
			before := len(w.queue)
			w.announced("u")
			st := w.users["u"]
			if got := len(w.queue) > before; got != tc.queue {
				t.Errorf("queued a report = %v, want %v", got, tc.queue)
			}
			accounted := tc.st != nil && (tc.st.busy && tc.st.reporting || !tc.st.busy && tc.st.applied)
			if st.announced == accounted {
				t.Errorf("announced = %v for a state whose row is accounted for = %v", st.announced, accounted)
			}
		})
	}
}

// A stream is announced once, before its headers, whichever stage of the
// opening sends them (see startOpening): the heads stage announces, and
// the catch-up that follows must not again (each announcement is an
// episode of presence to account for).
func TestStreamIsAnnouncedOnce(t *testing.T) {
	for name, order := range map[string]IDOrder{"global": GlobalIDOrder, "per-user": PerUserIDOrder} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			r := newRig(t, Options{IDOrder: order, Announce: func(context.Context, string) error {
				n.Add(1)
				return nil
			}})
			c := r.open("bob", "d", "")
			c.raw() // the opening block
			if got := n.Load(); got != 1 {
				t.Fatalf("announced %d times before the headers, want 1", got)
			}
			c.raw() // synced: the opening is over
			if got := n.Load(); got != 1 {
				t.Fatalf("announced %d times by the end of the opening, want 1", got)
			}
		})
	}
}
