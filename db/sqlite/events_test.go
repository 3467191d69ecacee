package sqlite

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"callsig/calls"
	"callsig/db/storetest"
)

// SQLite gives event ids from one global sequence, in the order the single
// writer commits: the hub's in-order release waits on that one sequence.
// (The per-user guarantees every backend keeps are in db/storetest.)
func TestEventIDsIncreaseInCommitOrder(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	// Concurrent Updates: whatever order the writer commits them in, the ids
	// must increase along it, and within a change along its event order.
	var mu sync.Mutex
	var committed [][]calls.Event // in the order the writer ran the fns
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ch := storetest.NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob", "carol", "dave")
			err := s.Update(ctx, func(tx calls.Tx) error {
				if err := tx.Save(ctx, ch); err != nil {
					return err
				}
				mu.Lock() // fns run one at a time on the writer; the lock is for the race detector
				committed = append(committed, ch.Events)
				mu.Unlock()
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var last int64
	for _, evs := range committed {
		for _, ev := range evs {
			if ev.ID <= last {
				t.Fatalf("event id %d after %d: ids must increase in commit order", ev.ID, last)
			}
			last = ev.ID
		}
	}
}
