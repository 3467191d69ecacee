package db

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"callsig/calls"
)

func TestSaveCallRoundTrip(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	want := &calls.Call{
		ID: "c1", Caller: "alice", Mode: calls.ModeAdvanced, State: calls.CallEnded, Timeout: 45,
		ExtendedData: `{"k":"v"}`, CreateTime: 1000, EndTime: 9000, EndReason: calls.EndCallerOffline,
		NotReceivedCheck: true, CallerTracked: true, CallerOfflineAt: 7000,
		Users: []*calls.CallUser{
			{UserID: "zed", State: calls.StateAccepted, UpdateTime: 1000, AcceptTime: 1000, MainDevice: "phone"},
			{UserID: "bob", State: calls.StateNotYetReceived, Inviter: "zed", ExtendedData: "e",
				UpdateTime: 2000, InviteTime: 1500, AcceptTime: 0, TimeoutAt: 31000, NotReceivedAt: 6500, MainDevice: "tablet"},
			{UserID: "amy", State: calls.StateQuit, Inviter: "bob", UpdateTime: 3000, InviteTime: 1600, AcceptTime: 2500},
		},
	}
	in := want.Clone()
	save(t, s, &calls.Change{Call: in, Created: true})
	if in.Seq <= 0 {
		t.Fatalf("Save did not assign Seq: %d", in.Seq)
	}
	want.Seq = in.Seq

	got, err := s.Call(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back (read pool):\n got %+v\nwant %+v", got, want)
	}
	for i := range got.Users {
		if !reflect.DeepEqual(got.Users[i], want.Users[i]) {
			t.Errorf("user %d:\n got %+v\nwant %+v", i, got.Users[i], want.Users[i])
		}
	}
	// The same call read inside a write transaction.
	err = s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, "c1")
		if err == nil && !reflect.DeepEqual(c, want) {
			t.Errorf("read back (tx):\n got %+v\nwant %+v", c, want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := s.Call(ctx, "nope"); !errors.Is(err, calls.ErrCallNotFound) {
		t.Errorf("Call(unknown): err = %v, want ErrCallNotFound", err)
	}
	ghost := &calls.Change{Call: &calls.Call{ID: "ghost", State: calls.CallEnded}}
	err = s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ghost) })
	if !errors.Is(err, calls.ErrCallNotFound) {
		t.Errorf("Save of an unknown call: err = %v, want ErrCallNotFound", err)
	}
	dup := &calls.Change{Call: want.Clone(), Created: true}
	if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, dup) }); err == nil {
		t.Error("creating a call with an existing ID succeeded")
	}
}

func TestSaveWritesOnlyDirtyUsers(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	save(t, s, newCall("c1", "alice", 1000, "bob", "carol"))

	err := s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, "c1")
		if err != nil {
			return err
		}
		for _, u := range c.Users {
			if u.Dirty() {
				t.Errorf("loaded user %s is dirty", u.UserID)
			}
		}
		// bob accepts (dirty); carol changes without the flag, which must
		// not be written; dave joins (dirty, appended).
		c.State = calls.CallStarted
		c.ExtendedData = "changed"
		bob, carol := c.User("bob"), c.User("carol")
		bob.State, bob.AcceptTime, bob.TimeoutAt, bob.MainDevice = calls.StateAccepted, 2000, 0, "d1"
		markDirty(bob)
		carol.State = calls.StateRejected
		dave := &calls.CallUser{UserID: "dave", State: calls.StateInviting, Inviter: "bob", InviteTime: 2000}
		markDirty(dave)
		c.Users = append(c.Users, dave)
		return tx.Save(ctx, &calls.Change{Call: c})
	})
	if err != nil {
		t.Fatal(err)
	}

	c, err := s.Call(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, u := range c.Users {
		order = append(order, u.UserID)
	}
	if fmt.Sprint(order) != "[alice bob carol dave]" {
		t.Errorf("users = %v, want [alice bob carol dave]", order)
	}
	if c.ExtendedData != "changed" {
		t.Errorf("call extendedData = %q, want the update", c.ExtendedData)
	}
	if b := c.User("bob"); b.State != calls.StateAccepted || b.AcceptTime != 2000 || b.TimeoutAt != 0 || b.MainDevice != "d1" {
		t.Errorf("bob = %+v, want the dirty update written", b)
	}
	if st := c.User("carol").State; st != calls.StateInviting {
		t.Errorf("carol = %s, want inviting: a clean user must not be written", st)
	}
	if d := c.User("dave"); d == nil || d.Inviter != "bob" {
		t.Errorf("dave = %+v, want inserted", d)
	}
}

func TestListCallsPaging(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for i := range 25 {
		save(t, s, newCall(fmt.Sprintf("c%02d", i), "alice", int64(1000+i), "bob"))
		save(t, s, newCall(fmt.Sprintf("other%02d", i), "carol", int64(1000+i), "dave"))
	}
	var seen []string
	var before int64
	for page := 0; ; page++ {
		list, err := s.ListCalls(ctx, "bob", before, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			break
		}
		if page > 3 {
			t.Fatal("paging does not end")
		}
		for _, c := range list {
			seen = append(seen, c.ID)
			if len(c.Users) != 2 || c.Users[0].UserID != "alice" || c.Users[1].UserID != "bob" {
				t.Errorf("%s users = %+v, want [alice bob]", c.ID, c.Users)
			}
		}
		before = list[len(list)-1].Seq
	}
	if len(seen) != 25 {
		t.Fatalf("listed %d calls, want 25: %v", len(seen), seen)
	}
	for i, id := range seen {
		if want := fmt.Sprintf("c%02d", 24-i); id != want {
			t.Errorf("position %d = %s, want %s (newest first, each once)", i, id, want)
		}
	}
	if list, _ := s.ListCalls(ctx, "nobody", 0, 10); len(list) != 0 {
		t.Errorf("ListCalls(nobody) = %d calls", len(list))
	}
}

func TestPendingCallsOfCallerAndArm(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	pending := newCall("pending", "alice", 1000, "bob")
	pending.Call.CallerTracked = true
	save(t, s, pending)
	answered := newCall("answered", "alice", 1000, "bob")
	answered.Call.Users[1].State = calls.StateAccepted
	answered.Call.CallerTracked = true
	save(t, s, answered)
	ended := newCall("ended", "alice", 1000, "bob")
	ended.Call.State = calls.CallEnded
	ended.Call.CallerTracked = true
	save(t, s, ended)
	save(t, s, newCall("others", "carol", 1000, "bob"))
	untracked := newCall("untracked", "dave", 1000, "erin")
	save(t, s, untracked)

	err := s.Update(ctx, func(tx calls.Tx) error {
		list, err := tx.PendingCallsOfCaller(ctx, "alice")
		if err != nil {
			return err
		}
		if len(list) != 1 || list[0].ID != "pending" || len(list[0].Users) != 2 {
			t.Errorf("PendingCallsOfCaller(alice) = %+v, want [pending] with its users", list)
		}
		n, err := tx.ArmTrackedCallers(ctx, 5000)
		if n != 2 {
			t.Errorf("ArmTrackedCallers armed %d, want 2 (started and tracked)", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{"pending": 5000, "answered": 5000, "ended": 0, "untracked": 0} {
		c, err := s.Call(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.CallerOfflineAt != want {
			t.Errorf("%s callerOfflineAt = %d, want %d", id, c.CallerOfflineAt, want)
		}
	}
}
