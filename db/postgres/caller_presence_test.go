package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/postgres"
)

// onlineUsers is a calls.Presence in which the listed users are online.
type onlineUsers map[string]bool

func (o onlineUsers) Online(userID string) bool { return o[userID] }

// pausingStore holds the first transaction that reads a caller's calls
// through the method named by pauseAfter, right after the read, until
// release is closed: the window in which a request on another node may
// change one of those calls.
type pausingStore struct {
	*postgres.Store
	pauseAfter string // "CallerOfflineCalls" or "TrackedCallerOfflineCalls"
	once       sync.Once
	read       chan struct{} // closed once the held transaction has read
	release    chan struct{}
	done       chan error // the held transaction's outcome, once committed
}

func newPausingStore(s *postgres.Store, pauseAfter string) *pausingStore {
	return &pausingStore{Store: s, pauseAfter: pauseAfter,
		read: make(chan struct{}), release: make(chan struct{}), done: make(chan error, 1)}
}

func (p *pausingStore) Update(ctx context.Context, fn func(calls.Tx) error) error {
	held := false
	err := p.Store.Update(ctx, func(tx calls.Tx) error { return fn(&pausingTx{Tx: tx, p: p, held: &held}) })
	if held {
		p.done <- err
	}
	return err
}

type pausingTx struct {
	calls.Tx
	p    *pausingStore
	held *bool
}

func (t *pausingTx) pause(method string) {
	if method != t.p.pauseAfter {
		return
	}
	t.p.once.Do(func() {
		*t.held = true
		close(t.p.read)
		<-t.p.release
	})
}

func (t *pausingTx) CallerOfflineCalls(ctx context.Context, userID string, after int64, limit int) ([]*calls.Call, error) {
	list, err := t.Tx.CallerOfflineCalls(ctx, userID, after, limit)
	t.pause("CallerOfflineCalls")
	return list, err
}

func (t *pausingTx) TrackedCallerOfflineCalls(ctx context.Context, after int64, limit int) ([]*calls.Call, error) {
	list, err := t.Tx.TrackedCallerOfflineCalls(ctx, after, limit)
	t.pause("TrackedCallerOfflineCalls")
	return list, err
}

// A transaction changing a caller's calls for their presence, on node A,
// and an invitee's accept of one of those calls, on node B, take turns on
// the call: whichever comes second sees what the first committed. The
// presence transaction reads the calls and writes every column of each
// back; read without a lock, the accept could commit in between, and the
// call it ended was written back as started, the caller's grace armed (a
// lost update). Both presence transactions are checked: a caller's last
// stream closing (UserOffline) and a node's start arming the grace of the
// tracked callers it finds offline (Run).
func TestCallerPresenceTakesTurnsWithAChangeOfTheCall(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pauseAfter string
		run        func(context.Context, *calls.Service) error
	}{
		{"caller's last stream closes", "CallerOfflineCalls", func(ctx context.Context, s *calls.Service) error {
			return s.UserOffline(ctx, "alice", time.Time{})
		}},
		{"node start arms the grace", "TrackedCallerOfflineCalls", func(ctx context.Context, s *calls.Service) error {
			return s.Run(ctx) // arms, then fires deadlines until ctx ends
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes, dsn := openNodes(t, 2)
			ctx := context.Background()
			cfg := calls.Config{HeartbeatTimeout: 30 * time.Second, SharedPresence: true}
			held := newPausingStore(nodes[0], tc.pauseAfter)
			nodeA := calls.NewService(calls.Options{Store: held, Config: cfg}) // alice has no stream on it
			nodeB := calls.NewService(calls.Options{Store: nodes[1], Presence: onlineUsers{"alice": true}, Config: cfg})

			res, err := nodeB.Invite(ctx, calls.Actor{UserID: "alice", Device: "default"},
				calls.InviteInput{Invitees: []string{"bob"}, Timeout: 60})
			if err != nil {
				t.Fatal(err)
			}
			if c, err := nodes[1].Call(ctx, res.CallID); err != nil || !c.CallerTracked {
				t.Fatalf("setup: call %+v (%v), want it caller-tracked", c, err)
			}

			runCtx, stop := context.WithCancel(ctx)
			ran := make(chan error, 1)
			go func() { ran <- tc.run(runCtx, nodeA) }()
			defer func() {
				stop()
				if err := <-ran; err != nil {
					t.Errorf("node A: %v", err)
				}
			}()
			release := sync.OnceFunc(func() { close(held.release) })
			defer release() // runs before the wait for node A, should the test end early
			select {
			case <-held.read:
			case err := <-ran:
				t.Fatalf("node A returned before reading alice's calls: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("node A never read alice's calls")
			}

			// The accept either commits at once, with the presence
			// transaction's copy of the call already stale, or waits for
			// the call that transaction holds; only then is it let go on.
			accepted := make(chan error, 1)
			go func() {
				_, err := nodeB.Accept(ctx, calls.Actor{UserID: "bob", Device: "default"}, res.CallID, "")
				accepted <- err
			}()
			waitForLockOrDone(t, dsn, accepted)
			release()
			if err := <-held.done; err != nil {
				t.Fatalf("node A's presence transaction: %v", err)
			}
			if err := <-accepted; err != nil {
				t.Fatalf("accept on node B: %v", err)
			}

			final, err := nodes[1].Call(ctx, res.CallID)
			if err != nil {
				t.Fatal(err)
			}
			bob := final.User("bob")
			if final.State != calls.CallEnded || final.EndReason != calls.EndCompleted || final.EndTime == 0 ||
				final.CallerOfflineAt != 0 || bob == nil || bob.State != calls.StateAccepted {
				t.Fatalf("call after bob's accept and alice's presence change: state %s, endReason %q, endTime %d, callerOfflineAt %d, bob %+v; want ended (completed) with bob accepted and no grace armed",
					final.State, final.EndReason, final.EndTime, final.CallerOfflineAt, bob)
			}
		})
	}
}
