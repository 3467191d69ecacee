package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
)

// gatedPresence answers whether alice is online (offline once gone is
// set), the first time only once released: the moment between the
// presence read inside POST /calls's transaction and its commit, in which
// the caller's last stream closes.
type gatedPresence struct {
	once    sync.Once
	asked   chan struct{}
	release chan struct{}
	gone    atomic.Bool
}

func (g *gatedPresence) Online(string) bool {
	first := false
	g.once.Do(func() {
		first = true
		close(g.asked)
		<-g.release
	})
	return first || !g.gone.Load()
}

// A caller online when its call is created (tracked) whose last stream
// closes before that creation commits got no grace armed: the offline
// report's transaction did not see the uncommitted call, and nothing else
// ever armed it (a review). The creation asks again once committed.
func TestOfflineReportRacingCallCreation(t *testing.T) {
	nodes, _ := openNodes(t, 1)
	ctx := context.Background()
	cfg := calls.Config{HeartbeatTimeout: 30 * time.Second, SharedPresence: true}
	p := &gatedPresence{asked: make(chan struct{}), release: make(chan struct{})}
	svc := calls.NewService(calls.Options{Store: nodes[0], Presence: p, Config: cfg})

	type result struct {
		id  string
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := svc.Invite(ctx, calls.Actor{UserID: "alice", Device: "default"},
			calls.InviteInput{Invitees: []string{"bob"}, Timeout: 600})
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{id: res.CallID}
	}()
	select {
	case <-p.asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the invite never asked for alice's presence")
	}
	// alice's last stream closes now: the hub's offline report runs, and
	// cannot see the call.
	p.gone.Store(true)
	if err := svc.UserOffline(ctx, "alice", time.Now()); err != nil {
		t.Fatal(err)
	}
	close(p.release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	c, err := nodes[0].Call(ctx, r.id)
	if err != nil {
		t.Fatal(err)
	}
	if c.CallerTracked && c.CallerOfflineAt == 0 {
		t.Fatalf("call %s tracked (caller online at creation) but no grace armed although the caller's offline report came after: it is never cancelled", r.id)
	}
}
