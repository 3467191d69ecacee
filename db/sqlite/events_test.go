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

// A change's events go in INSERTs of up to maxEventRows rows: each event
// gets the id of its own row, in order, across the statements, and each
// invitee's row points at its own invitation.
func TestEventsOfAChangeKeepTheirIDs(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for _, n := range []int{1, maxEventRows - 1, maxEventRows, maxEventRows + 1, 2*maxEventRows + 3} {
		invitees := make([]string, n)
		for i := range invitees {
			invitees[i] = fmt.Sprintf("u%d-%d", n, i)
		}
		ch := storetest.NewCall(fmt.Sprintf("call-of-%d", n), "alice", 1000, invitees...)
		if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
			t.Fatal(err)
		}
		if len(ch.Events) != n {
			t.Fatalf("%d invitees, %d events", n, len(ch.Events))
		}
		for i, ev := range ch.Events {
			var user, typ string
			if err := s.rdb.QueryRow(`SELECT user_id, type FROM events WHERE id = ?`, ev.ID).Scan(&user, &typ); err != nil {
				t.Fatalf("%d events, event %d (id %d): %v", n, i, ev.ID, err)
			}
			if user != ev.UserID || typ != string(ev.Type) {
				t.Errorf("%d events, event %d: id %d holds %s for %s, want %s for %s", n, i, ev.ID, typ, user, ev.Type, ev.UserID)
			}
			if i > 0 && ev.ID != ch.Events[i-1].ID+1 {
				t.Errorf("%d events: ids %d then %d", n, ch.Events[i-1].ID, ev.ID)
			}
			var invitation int64
			if err := s.rdb.QueryRow(`SELECT invitation_event_id FROM call_users WHERE user_id = ?`, ev.UserID).Scan(&invitation); err != nil {
				t.Fatal(err)
			}
			if invitation != ev.ID {
				t.Errorf("%s's row points at event %d, its invitation is %d", ev.UserID, invitation, ev.ID)
			}
		}
	}
}
