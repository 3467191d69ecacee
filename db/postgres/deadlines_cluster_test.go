package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// timeoutCounter is a node's calls.Notifier counting the timeout events
// its scheduler committed.
type timeoutCounter struct{ n atomic.Int64 }

func (c *timeoutCounter) Committed(evs []calls.Event, _ int) {
	for _, e := range evs {
		if e.Type == calls.EventTimeout {
			c.n.Add(1)
		}
	}
}

// runNode runs a calls.Service on store with clock until the test ends.
func runNode(t *testing.T, store *postgres.Store, clock calls.Clock) (*calls.Service, *timeoutCounter) {
	t.Helper()
	counter := &timeoutCounter{}
	svc := calls.NewService(calls.Options{Store: store, Clock: clock, Notifier: counter,
		Config: calls.Config{DeadlinePoll: time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})
	return svc, counter
}

// saveCalls writes n started calls, each with one invitee whose timeout
// falls due at dueAt, through store, 250 per transaction.
func saveCalls(t *testing.T, store *postgres.Store, prefix string, n int, dueAt int64) {
	t.Helper()
	for i := 0; i < n; i += 250 {
		err := store.Update(context.Background(), func(tx calls.Tx) error {
			for j := i; j < min(i+250, n); j++ {
				ch := started(fmt.Sprintf("%s-%05d", prefix, j), fmt.Sprintf("caller%d", j), fmt.Sprintf("callee%d", j))
				ch.Call.Users[1].TimeoutAt = dueAt
				if err := tx.Save(context.Background(), ch); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("save calls: %v", err)
		}
	}
}

// Three nodes run the scheduler over the same due deadlines: each fires
// exactly once (one timeout event per invitation, counted at the nodes
// that committed them and in the log), and the nodes share the work.
func TestDeadlinesFireOnceAcrossNodes(t *testing.T) {
	const n = 3000
	nodes, _ := openNodes(t, 3)
	clock := fakeclock.New(time.UnixMilli(1_000))
	saveCalls(t, nodes[0], "due", n, 31_000)
	var counters []*timeoutCounter
	for _, s := range nodes {
		_, c := runNode(t, s, clock)
		counters = append(counters, c)
	}
	clock.Advance(40 * time.Second) // every deadline due; every node's poll fires
	total := func() (sum int64) {
		for _, c := range counters {
			sum += c.n.Load()
		}
		return sum
	}
	wait.For(t, 60*time.Second, "every deadline fired", func() bool { return total() >= n })
	next, err := nodes[1].NextDeadline(context.Background())
	if err != nil || next != 0 {
		t.Fatalf("NextDeadline after all fired = %d, %v; want 0", next, err)
	}
	if got := total(); got != n {
		t.Fatalf("%d timeout events committed for %d deadlines", got, n)
	}
	var logged int
	for j := 0; j < n; j += 500 {
		evs, err := nodes[2].EventsAfter(context.Background(), fmt.Sprintf("callee%d", j), 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Type == calls.EventTimeout {
				logged++
			}
		}
	}
	if logged != n/500 {
		t.Fatalf("sampled invitees have %d timeout events in the log, want one each (%d)", logged, n/500)
	}
	for i, c := range counters {
		t.Logf("node %d fired %d", i, c.n.Load())
	}
}

// A deadline written by a node that then stops (it never fires it, and
// the others' timers know nothing of it) is fired by another node within
// its poll interval.
func TestDeadlineOfAStoppedNodeIsFired(t *testing.T) {
	nodes, _ := openNodes(t, 2)
	clock := fakeclock.New(time.UnixMilli(1_000))
	// Node A knows only a deadline far away.
	saveCalls(t, nodes[0], "late", 1, 3_600_000)
	_, counter := runNode(t, nodes[0], clock)
	// Node B (no scheduler running: stopped) writes an earlier one.
	saveCalls(t, nodes[1], "early", 1, 31_000)
	var once sync.Once
	wait.For(t, 10*time.Second, "node A to fire node B's deadline", func() bool {
		once.Do(func() { clock.Advance(31 * time.Second) })
		clock.Advance(time.Second) // node A's poll timer
		return counter.n.Load() == 1
	})
}
