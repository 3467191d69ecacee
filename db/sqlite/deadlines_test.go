package sqlite

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"callsig/calls"
	"callsig/db/storetest"
)

// On SQLite, UpdateDue reads the due deadlines inside the write
// transaction, after the requests before it in the batch: concurrent
// UpdateDues, group-committed together, never get the same deadline (read
// outside the transaction, they would all get the earliest ones).
func TestUpdateDueNeverHandsADeadlineTwice(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	const n, workers = 300, 8
	err := s.Update(ctx, func(tx calls.Tx) error {
		for i := range n {
			if err := tx.Save(ctx, storetest.NewCall(fmt.Sprintf("c%03d", i), fmt.Sprintf("a%d", i), 1_000, fmt.Sprintf("b%d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		handed = map[string]int{}
		wg     sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var ids []string
				got, err := s.UpdateDue(ctx, 40_000, 5, func(tx calls.Tx, due []calls.Deadline) error {
					for _, d := range due {
						ids = append(ids, d.CallID)
						c, err := tx.Call(ctx, d.CallID)
						if err != nil {
							return err
						}
						if ch := calls.Expire(c, d, 40_000); ch != nil {
							if err := tx.Save(ctx, ch); err != nil {
								return err
							}
						}
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				if got == 0 {
					return
				}
				mu.Lock()
				for _, id := range ids {
					handed[id]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if id := fmt.Sprintf("c%03d", i); handed[id] != 1 {
			t.Errorf("%s handed out %d times, want once", id, handed[id])
		}
	}
}
