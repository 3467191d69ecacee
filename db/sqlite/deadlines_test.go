package sqlite

import (
	"context"
	"fmt"
	"testing"

	"callsig/calls"
)

func TestDeadlinesAcrossKinds(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if next, err := s.NextDeadline(ctx); err != nil || next != 0 {
		t.Errorf("NextDeadline with none = %d (%v), want 0", next, err)
	}

	// a: bob times out at 300, carol becomes notYetReceived at 200.
	a := newCall("a", "alice", 0, "bob", "carol")
	a.Call.Users[1].TimeoutAt = 300
	a.Call.Users[2].TimeoutAt = 0
	a.Call.Users[2].NotReceivedAt = 200
	// b: the caller dave goes offline at 100.
	b := newCall("b", "dave", 0, "erin")
	b.Call.Users[1].TimeoutAt = 0
	b.Call.CallerOfflineAt = 100
	// c: gina becomes notYetReceived at 400; her timeout (900) is not due.
	c := newCall("c", "frank", 0, "gina")
	c.Call.Users[1].TimeoutAt = 900
	c.Call.Users[1].NotReceivedAt = 400
	for _, ch := range []*calls.Change{a, b, c} {
		save(t, s, ch)
	}

	if next, err := s.NextDeadline(ctx); err != nil || next != 100 {
		t.Errorf("NextDeadline = %d (%v), want 100", next, err)
	}
	due, err := s.DueDeadlines(ctx, 500, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []calls.Deadline{
		{CallID: "b", Kind: calls.DeadlineCallerOffline, At: 100},
		{CallID: "a", UserID: "carol", Kind: calls.DeadlineNotReceived, At: 200},
		{CallID: "a", UserID: "bob", Kind: calls.DeadlineTimeout, At: 300},
		{CallID: "c", UserID: "gina", Kind: calls.DeadlineNotReceived, At: 400},
	}
	if fmt.Sprint(due) != fmt.Sprint(want) {
		t.Errorf("DueDeadlines(500) =\n %v\nwant\n %v", due, want)
	}
	if due, _ := s.DueDeadlines(ctx, 500, 2); fmt.Sprint(due) != fmt.Sprint(want[:2]) {
		t.Errorf("DueDeadlines(500, limit 2) = %v, want %v", due, want[:2])
	}
	if due, _ := s.DueDeadlines(ctx, 99, 10); len(due) != 0 {
		t.Errorf("DueDeadlines(99) = %v, want none", due)
	}

	// Clearing a deadline (as a transition does) removes it.
	err = s.Update(ctx, func(tx calls.Tx) error {
		b, err := tx.Call(ctx, "b")
		if err != nil {
			return err
		}
		b.CallerOfflineAt = 0
		return tx.Save(ctx, &calls.Change{Call: b})
	})
	if err != nil {
		t.Fatal(err)
	}
	if next, _ := s.NextDeadline(ctx); next != 200 {
		t.Errorf("NextDeadline after clearing = %d, want 200", next)
	}
}
