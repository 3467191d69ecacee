package sqlite

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// The scheduler queues its next claim of deadlines as soon as the last
// claim has fired its batch in the writer's transaction, while that batch
// is fsynced (calls.ClaimBatching.Pipelined), and no sooner than the claim
// before it is answered: with the first claim's fsync held, the writer
// fires a second claim's 64 deadlines, and not a third's. Every deadline
// then fires once.
func TestClaimsPipelineBehindTheFsync(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const batch, n = 64, 3 * 64
	if got := s.DeadlineBatching(); got.Batch != batch || !got.Pipelined {
		t.Fatalf("DeadlineBatching = %+v, want pipelined claims of %d", got, batch)
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		for i := range n {
			if err := tx.Save(ctx, storetest.NewCall(fmt.Sprintf("c%03d", i), fmt.Sprintf("caller%d", i), 1_000, fmt.Sprintf("callee%d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Fsyncs pass until hold is set; the first one after it waits for the
	// gate, the later ones for it too, queued behind it in the syncer.
	var hold atomic.Bool
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	open := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	real := s.syncWAL
	s.syncWAL = func() error {
		if hold.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
		return real()
	}
	clock := fakeclock.New(time.UnixMilli(1_000))
	fired := &timeouts{}
	svc := calls.NewService(calls.Options{Store: s, Clock: clock, Notifier: fired})
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(ctx) }()
	// The scheduler's first round (nothing due) is over once it has armed
	// its timer for the deadlines; then the next fsync is a claim's.
	wait.For(t, 10*time.Second, "the scheduler armed for the deadlines", func() bool { return clock.Armed(time.UnixMilli(31_000)) })
	hold.Store(true)
	clock.Advance(40 * time.Second) // every invitation's 30 s timeout is due
	select {                        // the first claim committed; its fsync is held
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no claim reached an fsync within 10 s of the deadlines falling due")
	}
	// Counted in the writer's transaction, which holds what is committed
	// or still open but not yet durable.
	timedOut := func() int {
		got := make(chan int, 1)
		goWrite(s, ctx, func(tx *sqlx.Tx) error {
			var k int
			err := tx.Get(&k, `SELECT COUNT(*) FROM call_users WHERE state = 'timeout'`)
			got <- k
			return err
		})
		return <-got
	}
	wait.For(t, 10*time.Second, "a second claim fired while the first one's fsync is held", func() bool { return timedOut() >= 2*batch })
	if k := timedOut(); k != 2*batch {
		t.Errorf("%d deadlines fired while the first claim's fsync is held, want %d (two claims in flight)", k, 2*batch)
	}
	if k := fired.n.Load(); k != 0 {
		t.Errorf("%d timeouts reported committed before any fsync", k)
	}
	open()
	wait.For(t, 10*time.Second, "every deadline to fire", func() bool { return fired.n.Load() >= n })
	cancel()
	if err := <-ran; err != nil && err != context.Canceled {
		t.Fatal(err)
	}
	if k := fired.n.Load(); k != n {
		t.Errorf("%d timeouts for %d deadlines", k, n)
	}
}
