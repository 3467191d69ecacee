package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

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
			ch := newCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob", "carol", "dave")
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
	all, err := s.EventsAfter(ctx, "carol", 0, 1000)
	if err != nil || len(all) != 50 {
		t.Fatalf("EventsAfter(carol) = %d events (%v), want 50", len(all), err)
	}
	page, _ := s.EventsAfter(ctx, "carol", all[9].ID, 5)
	if len(page) != 5 || page[0].ID != all[10].ID || page[4].ID != all[14].ID {
		t.Errorf("EventsAfter(carol, %d, 5) = %+v, want events 10..14", all[9].ID, page)
	}
	ev := all[0]
	if ev.UserID != "carol" || ev.Type != calls.EventReceived || ev.Time != 1000 || !json.Valid(ev.Data) {
		t.Errorf("event read back = %+v", ev)
	}
}

func TestPendingInvitations(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	save(t, s, newCall("c1", "alice", 1000, "bob"))
	save(t, s, newCall("c2", "carol", 1000, "bob"))
	save(t, s, newCall("c3", "dave", 1000, "bob"))

	// c1 re-invites bob: the newest invitation event of c1 is the one to replay.
	// c2: bob accepted, nothing to replay. c3 ended.
	var reinvite calls.Event
	err := s.Update(ctx, func(tx calls.Tx) error {
		c1, err := tx.Call(ctx, "c1")
		if err != nil {
			return err
		}
		ch := &calls.Change{Call: c1, Events: []calls.Event{
			{UserID: "bob", CallID: "c1", Type: calls.EventReceived, Data: json.RawMessage(`{"again":true}`), Time: 2000},
			{UserID: "bob", CallID: "c1", Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 2000},
		}}
		if err := tx.Save(ctx, ch); err != nil {
			return err
		}
		reinvite = ch.Events[0]
		c2, err := tx.Call(ctx, "c2")
		if err != nil {
			return err
		}
		c2.User("bob").State = calls.StateAccepted
		markDirty(c2.User("bob"))
		if err := tx.Save(ctx, &calls.Change{Call: c2}); err != nil {
			return err
		}
		c3, err := tx.Call(ctx, "c3")
		if err != nil {
			return err
		}
		c3.State = calls.CallEnded
		return tx.Save(ctx, &calls.Change{Call: c3})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.PendingInvitations(ctx, "bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != reinvite.ID || string(got[0].Data) != `{"again":true}` {
		t.Errorf("PendingInvitations(bob) = %+v, want only the re-invitation %d", got, reinvite.ID)
	}
	if got, _ := s.PendingInvitations(ctx, "alice", 0); len(got) != 0 {
		t.Errorf("PendingInvitations(alice) = %+v, want none", got)
	}
}

func TestPruneEventsAndBounds(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if id, err := s.LastEventID(ctx); err != nil || id != 0 {
		t.Errorf("LastEventID on empty log = %d (%v), want 0", id, err)
	}
	if id, err := s.OldestEventID(ctx); err != nil || id != 0 {
		t.Errorf("OldestEventID on empty log = %d (%v), want 0", id, err)
	}
	// 2500 old events (more than two prune batches) and 10 recent ones.
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2510)
			INSERT INTO events (user_id, type, data, time)
			SELECT 'bob', 'test', '{}', CASE WHEN i <= 2500 THEN 1000 ELSE 9000 END FROM n`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	last, _ := s.LastEventID(ctx)
	n, err := s.PruneEvents(ctx, 5000)
	if err != nil || n != 2500 {
		t.Fatalf("PruneEvents = %d (%v), want 2500", n, err)
	}
	if left := count(t, s, "events"); left != 10 {
		t.Errorf("%d events left, want 10", left)
	}
	oldest, _ := s.OldestEventID(ctx)
	if oldest != last-9 {
		t.Errorf("OldestEventID = %d, want %d", oldest, last-9)
	}
	if n, _ := s.PruneEvents(ctx, 99999); n != 10 {
		t.Errorf("pruning the rest deleted %d, want 10", n)
	}
	if got, _ := s.LastEventID(ctx); got != last {
		t.Errorf("LastEventID after emptying the log = %d, want %d (ids are never reused)", got, last)
	}
}
