package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/internal/fakeclock"
)

func testSaveCallRoundTrip(t *testing.T, s db.Store) {
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
	Save(t, s, &calls.Change{Call: in, Created: true})
	if in.Seq <= 0 {
		t.Fatalf("Save did not assign Seq: %d", in.Seq)
	}
	want.Seq = in.Seq

	got, err := s.Call(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back (committed):\n got %+v\nwant %+v", got, want)
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
	err = s.Update(ctx, func(tx calls.Tx) error {
		_, err := tx.Call(ctx, "nope")
		return err
	})
	if !errors.Is(err, calls.ErrCallNotFound) {
		t.Errorf("Tx.Call(unknown): err = %v, want ErrCallNotFound", err)
	}
	for _, seq := range []int64{0, 999_999} { // a seq known or not
		ghost := &calls.Change{Call: &calls.Call{ID: "ghost", Seq: seq, State: calls.CallEnded}}
		err = s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ghost) })
		if !errors.Is(err, calls.ErrCallNotFound) {
			t.Errorf("Save of an unknown call (seq %d): err = %v, want ErrCallNotFound", seq, err)
		}
	}
	// A call saved without its seq (not read from the store) gets it back,
	// and its users' rows are its own. (On SQLite, the contract run
	// without the writer's cache always takes the path that reads it.)
	stored, err := s.Call(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	unread := stored.Clone()
	unread.Seq = 0
	unread.Users[0].ExtendedData = "saved without a seq"
	markDirty(unread.Users[0])
	if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, &calls.Change{Call: unread}) }); err != nil {
		t.Fatal(err)
	}
	if unread.Seq != stored.Seq {
		t.Errorf("Save of a call without its seq set Seq = %d, want %d", unread.Seq, stored.Seq)
	}
	if back, err := s.Call(ctx, want.ID); err != nil || back.Users[0].ExtendedData != "saved without a seq" {
		t.Errorf("Call(%s) after a Save without its seq = %+v, %v; want its first user's data saved", want.ID, back, err)
	}
	stored.Users[0].ExtendedData = "saved without a seq" // as stored now
	// A call carrying another call's seq (a defect) never writes its users
	// under that other call: the store refuses it or finds its own row.
	Save(t, s, NewCall("other", "olga", 1000, "oscar"))
	other, err := s.Call(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	wrong := stored.Clone()
	wrong.Seq = other.Seq
	wrong.Users[0].State = calls.StateQuit
	markDirty(wrong.Users[0])
	_ = s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, &calls.Change{Call: wrong}) })
	after, err := s.Call(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after, other) {
		t.Errorf("call other after a Save of %s with its seq = %+v, want unchanged %+v", want.ID, after, other)
	}
	dup := &calls.Change{Call: want.Clone(), Created: true}
	if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, dup) }); err == nil {
		t.Error("creating a call with an existing ID succeeded")
	}
}

func testSaveWritesOnlyDirtyUsers(t *testing.T, s db.Store) {
	ctx := context.Background()
	Save(t, s, NewCall("c1", "alice", 1000, "bob", "carol"))

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

// Calls (calls.CallsLoader, which the scheduler's claims use) loads several
// calls in one go, each as Call loads it, leaves out an id that names no
// call, and sees what the transaction wrote before it.
func testCallsLoadsSeveralAsCallDoes(t *testing.T, s db.Store) {
	ctx := context.Background()
	Save(t, s, NewCall("c1", "alice", 1000, "bob", "carol"))
	Save(t, s, NewCall("c2", "dave", 1000, "erin"))
	err := s.Update(ctx, func(tx calls.Tx) error {
		loader, ok := tx.(calls.CallsLoader)
		if !ok {
			return fmt.Errorf("the Tx (%T) is no calls.CallsLoader", tx)
		}
		if err := tx.Save(ctx, NewCall("c3", "frank", 2000, "gina")); err != nil {
			return err
		}
		got, err := loader.Calls(ctx, []string{"c2", "nope", "c1", "c3"})
		if err != nil {
			return err
		}
		if len(got) != 3 || got["nope"] != nil {
			t.Errorf("Calls = %d calls (%v), want c1, c2 and c3 only", len(got), got)
		}
		for _, id := range []string{"c1", "c2", "c3"} {
			one, err := tx.Call(ctx, id)
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(got[id], one) {
				t.Errorf("Calls gave %s as %+v, Call as %+v", id, got[id], one)
			}
		}
		if n := len(got["c1"].Users); n != 3 {
			t.Errorf("c1 loaded with %d users, want 3", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An Update whose fn fails or panics after saving leaves nothing: not the
// call, not its events. A panic comes back as a *db.PanicError, and the
// store goes on serving.
func testFailedUpdateLeavesNothing(t *testing.T, s db.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx calls.Tx) error {
		if err := tx.Save(ctx, NewCall("failed", "alice", 1000, "bob")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing Update = %v, want its own error", err)
	}
	err = s.Update(ctx, func(tx calls.Tx) error {
		if err := tx.Save(ctx, NewCall("panicked", "alice", 1000, "bob")); err != nil {
			return err
		}
		panic("kaboom")
	})
	var pe *db.PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" {
		t.Fatalf("panicking Update = %v, want a *db.PanicError with the value", err)
	}
	for _, id := range []string{"failed", "panicked"} {
		if _, err := s.Call(ctx, id); !errors.Is(err, calls.ErrCallNotFound) {
			t.Errorf("Call(%s) after its Update failed: %v, want ErrCallNotFound", id, err)
		}
	}
	if evs := events(t, s, "bob"); len(evs) != 0 {
		t.Errorf("events of failed Updates: %+v", evs)
	}
	Save(t, s, NewCall("after", "alice", 1000, "bob"))
	if evs := events(t, s, "bob"); len(evs) != 1 || evs[0].CallID != "after" {
		t.Errorf("events after a good Update: %+v, want the one of 'after'", evs)
	}
}

func testListCallsPaging(t *testing.T, s db.Store) {
	ctx := context.Background()
	for i := range 25 {
		Save(t, s, NewCall(fmt.Sprintf("c%02d", i), "alice", int64(1000+i), "bob"))
		Save(t, s, NewCall(fmt.Sprintf("other%02d", i), "carol", int64(1000+i), "dave"))
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
	// limit <= 0 is calls.DefaultListCount; the caller sees its calls too.
	if list, err := s.ListCalls(ctx, "alice", 0, 0); err != nil || len(list) != min(25, calls.DefaultListCount) {
		t.Errorf("ListCalls(alice, limit 0) = %d calls (%v), want %d", len(list), err, min(25, calls.DefaultListCount))
	}
}

// The caller-offline queries select exactly the calls the pure predicates
// accept: calls.PresenceMatters for one caller's presence (never an
// untracked call with nobody pending, which presence cannot change, so
// that a pile of them costs a stream nothing), calls.CallerOfflineApplies
// over the tracked ones for the start-up arming, including a lone caller's
// advanced call: the one predicate of arming and clearing (issue 9,
// defect 5).
func testCallerOfflineCallsMatchThePredicate(t *testing.T, s db.Store) {
	ctx := context.Background()
	var all []*calls.Change
	add := func(ch *calls.Change, tracked bool) {
		ch.Call.CallerTracked = tracked
		Save(t, s, ch)
		all = append(all, ch)
	}
	add(NewCall("pending", "alice", 1000, "bob"), true)
	answered := NewCall("answered", "alice", 1000, "bob")
	answered.Call.Users[1].State, answered.Call.Users[1].AcceptTime = calls.StateAccepted, 1500
	add(answered, true)
	quitAfterAccept := NewCall("quit", "alice", 1000, "bob")
	quitAfterAccept.Call.Mode = calls.ModeAdvanced
	quitAfterAccept.Call.Users[1].State, quitAfterAccept.Call.Users[1].AcceptTime = calls.StateQuit, 1500
	add(quitAfterAccept, true)
	lone := NewCall("lone", "alice", 1000, "bob")
	lone.Call.Mode = calls.ModeAdvanced
	lone.Call.Users[1].State = calls.StateRejected
	add(lone, true)
	untrackedLone := NewCall("untracked-lone", "alice", 1000, "bob")
	untrackedLone.Call.Mode = calls.ModeAdvanced
	untrackedLone.Call.Users[1].State = calls.StateTimeout
	add(untrackedLone, false)
	add(NewCall("untracked-pending", "alice", 1000, "bob"), false)
	armed := NewCall("armed", "alice", 1000, "bob")
	armed.Call.Users[1].State = calls.StateTimeout
	armed.Call.Mode, armed.Call.CallerOfflineAt = calls.ModeAdvanced, 5000
	add(armed, false)
	// bob timed out; dave joined uninvited (his own inviter) and is in:
	// no invitee accepted, so the caller-offline rule still applies.
	joined := NewCall("joined", "alice", 1000, "bob")
	joined.Call.Mode = calls.ModeAdvanced
	joined.Call.Users[1].State = calls.StateTimeout
	joined.Call.Users = append(joined.Call.Users, &calls.CallUser{UserID: "dave", State: calls.StateAccepted,
		Inviter: "dave", UpdateTime: 1200, AcceptTime: 1200})
	add(joined, true)
	ended := NewCall("ended", "alice", 1000, "bob")
	ended.Call.State = calls.CallEnded
	add(ended, true)
	add(NewCall("others", "carol", 1000, "bob"), true)
	add(NewCall("untracked", "dave", 1000, "erin"), false)

	want := func(caller string, trackedOnly bool) []string {
		var ids []string
		for _, ch := range all {
			c := ch.Call
			applies := calls.CallerOfflineApplies(c)
			if !trackedOnly {
				applies = calls.PresenceMatters(c)
			}
			if applies && (caller == "" || c.Caller == caller) && (!trackedOnly || c.CallerTracked) {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	idsOf := func(list []*calls.Call) []string {
		var ids []string
		for _, c := range list {
			if want := len(callOf(all, c.ID).Users); len(c.Users) != want {
				t.Errorf("%s loaded with %d users, want %d", c.ID, len(c.Users), want)
			}
			ids = append(ids, c.ID)
		}
		return ids
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		var list []*calls.Call
		for after := int64(0); ; { // in pages of 2
			page, err := tx.CallerOfflineCalls(ctx, "alice", after, 2)
			if err != nil {
				return err
			}
			if len(page) > 2 {
				t.Errorf("CallerOfflineCalls(alice, limit 2) returned %d calls", len(page))
			}
			list = append(list, page...)
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].Seq
		}
		if got, want := idsOf(list), want("alice", false); !slices.Equal(got, want) || !slices.Contains(got, "lone") ||
			!slices.Contains(got, "untracked-pending") || !slices.Contains(got, "armed") || slices.Contains(got, "untracked-lone") ||
			!slices.Contains(got, "joined") {
			t.Errorf("CallerOfflineCalls(alice) = %v, want %v", got, want)
		}
		var paged []*calls.Call
		for after := int64(0); ; {
			page, err := tx.TrackedCallerOfflineCalls(ctx, after, 1)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			after = page[len(page)-1].Seq
		}
		if got, want := idsOf(paged), want("", true); !slices.Equal(got, want) || len(got) != 4 {
			t.Errorf("TrackedCallerOfflineCalls = %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// callOf returns the call of all with id.
func callOf(all []*calls.Change, id string) *calls.Call {
	for _, ch := range all {
		if ch.Call.ID == id {
			return ch.Call
		}
	}
	return nil
}

// onlineSet is a calls.Presence with a fixed set of users online.
type onlineSet map[string]bool

func (o onlineSet) Online(u string) bool { return o[u] }

// commits is a calls.Notifier that reports each commit of the service.
type commits chan int

func (c commits) Committed(events []calls.Event, hooks int) { c <- len(events) }

// Service.Run is a background part: it arms the caller-offline grace of
// the tracked calls the rule applies to (skipping callers already back
// online), fires deadlines, and returns nil once its context ends.
// A caller's presence is applied to its calls in pages, one transaction
// each, so a caller with thousands of started calls never holds the writer
// for all of them at once (issue 9 review: 20,000 calls stalled every other
// request for seconds), and every page is reached.
func testCallerPresenceInPages(t *testing.T, s db.Store) {
	ctx := context.Background()
	const n = 450
	err := s.Update(ctx, func(tx calls.Tx) error {
		for i := range n {
			if err := tx.Save(ctx, NewCall(fmt.Sprintf("p%03d", i), "alice", 1000, "bob")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	counted := &savesPerUpdate{Store: s}
	clock := fakeclock.New(time.UnixMilli(10_000))
	svc := calls.NewService(calls.Options{Store: counted, Clock: clock, Config: calls.Config{HeartbeatTimeout: 30 * time.Second}})
	check := func(what string, want func(c *calls.Call) bool) {
		t.Helper()
		if counted.max == 0 || counted.max > 200 {
			t.Errorf("%s: %d calls saved in one transaction, want 1–200 (a page)", what, counted.max)
		}
		for i := range n {
			c, err := s.Call(ctx, fmt.Sprintf("p%03d", i))
			if err != nil || !want(c) {
				t.Fatalf("%s: call %d: tracked %v, offline at %d (%v)", what, i, c.CallerTracked, c.CallerOfflineAt, err)
			}
		}
		counted.max = 0
	}
	if err := svc.UserOnline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	check("online", func(c *calls.Call) bool { return c.CallerTracked && c.CallerOfflineAt == 0 })
	if err := svc.UserOffline(ctx, "alice", time.Time{}); err != nil {
		t.Fatal(err)
	}
	check("offline", func(c *calls.Call) bool { return c.CallerOfflineAt == 40_000 })
	// A report made late (the stream closed at 4 s, reported at 10 s)
	// arms every page from the close, not from the report.
	if err := svc.UserOnline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := svc.UserOffline(ctx, "alice", time.UnixMilli(4_000)); err != nil {
		t.Fatal(err)
	}
	check("offline since 4 s", func(c *calls.Call) bool { return c.CallerOfflineAt == 34_000 })
}

// savesPerUpdate is a db.Store that records the most calls one Update saved.
type savesPerUpdate struct {
	db.Store
	max int
}

func (s *savesPerUpdate) Update(ctx context.Context, fn func(calls.Tx) error) error {
	tx := &countingTx{}
	err := s.Store.Update(ctx, func(inner calls.Tx) error {
		tx.Tx, tx.saves = inner, 0
		return fn(tx)
	})
	s.max = max(s.max, tx.saves)
	return err
}

type countingTx struct {
	calls.Tx
	saves int
}

func (t *countingTx) Save(ctx context.Context, ch *calls.Change) error {
	t.saves++
	return t.Tx.Save(ctx, ch)
}

func testServiceRunArmsTrackedCallersAndStops(t *testing.T, s db.Store) {
	clock := fakeclock.New(time.UnixMilli(10_000))
	for _, c := range []struct {
		id, caller string
		tracked    bool
	}{{"gone", "alice", true}, {"back", "bob", true}, {"backend", "carol", false}} {
		ch := NewCall(c.id, c.caller, 1000, "dave")
		ch.Call.CallerTracked = c.tracked
		Save(t, s, ch)
	}
	committed := make(commits, 10)
	svc := calls.NewService(calls.Options{Store: s, Clock: clock, Presence: onlineSet{"bob": true},
		Notifier: committed, Config: calls.Config{HeartbeatTimeout: 30 * time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	select {
	case <-committed: // the arming of "gone", the only change it makes
	case <-time.After(5 * time.Second):
		t.Fatal("Run armed nothing")
	}
	for id, want := range map[string]int64{"gone": 40_000, "back": 0, "backend": 0} {
		if c, _ := s.Call(context.Background(), id); c.CallerOfflineAt != want {
			t.Errorf("%s: callerOfflineAt %d, want %d", id, c.CallerOfflineAt, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel, want nil", err)
	}
	if len(committed) != 0 {
		t.Errorf("%d more commits, want only the one arming", len(committed))
	}
}

// saveDeadlinesOfEveryKind saves three calls with deadlines of every kind:
// a: bob times out at 300, carol becomes notYetReceived at 200; b: the
// caller dave goes offline at 100; c: gina becomes notYetReceived at 400,
// her timeout (900) is not due.
func saveDeadlinesOfEveryKind(t *testing.T, s db.Store) {
	t.Helper()
	a := NewCall("a", "alice", 0, "bob", "carol")
	a.Call.Users[1].TimeoutAt = 300
	a.Call.Users[2].TimeoutAt = 0
	a.Call.Users[2].NotReceivedAt = 200
	b := NewCall("b", "dave", 0, "erin")
	b.Call.Users[1].TimeoutAt = 0
	b.Call.CallerOfflineAt = 100
	c := NewCall("c", "frank", 0, "gina")
	c.Call.Users[1].TimeoutAt = 900
	c.Call.Users[1].NotReceivedAt = 400
	for _, ch := range []*calls.Change{a, b, c} {
		Save(t, s, ch)
	}
}

func testDeadlinesAcrossKinds(t *testing.T, s db.Store) {
	ctx := context.Background()
	if next, err := s.NextDeadline(ctx); err != nil || next != 0 {
		t.Errorf("NextDeadline with none = %d (%v), want 0", next, err)
	}

	saveDeadlinesOfEveryKind(t, s)

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
	update(t, s, "b", func(b *calls.Call) *calls.Change {
		b.CallerOfflineAt = 0
		return &calls.Change{Call: b}
	})
	if next, _ := s.NextDeadline(ctx); next != 200 {
		t.Errorf("NextDeadline after clearing = %d, want 200", next)
	}
}

func testCallCounts(t *testing.T, s db.Store) {
	ctx := context.Background()
	if started, ended, err := s.CallCounts(ctx); err != nil || started != 0 || ended != 0 {
		t.Errorf("CallCounts of an empty store = %d, %d (%v), want 0, 0", started, ended, err)
	}
	for _, id := range []string{"a", "b", "c"} {
		Save(t, s, NewCall(id, "alice", 1000, "bob"))
	}
	update(t, s, "b", func(c *calls.Call) *calls.Change {
		c.State, c.EndTime, c.EndReason = calls.CallEnded, 2000, calls.EndCallerOffline
		return &calls.Change{Call: c}
	})
	if started, ended, err := s.CallCounts(ctx); err != nil || started != 2 || ended != 1 {
		t.Errorf("CallCounts = %d started, %d ended (%v), want 2 and 1", started, ended, err)
	}
	// The calls kept, not the calls ever made: pruned ones are gone.
	if n, err := s.PruneCalls(ctx, 3000); err != nil || n != 1 {
		t.Fatalf("PruneCalls = %d, %v; want the ended call", n, err)
	}
	if started, ended, err := s.CallCounts(ctx); err != nil || started != 2 || ended != 0 {
		t.Errorf("CallCounts after the ended call was pruned = %d started, %d ended (%v), want 2 and 0", started, ended, err)
	}
}

// Ping answers while the store is open; after Close every read and write
// fails with an error matching db.ErrClosed and calls.ErrUnavailable (the
// HTTP layer's 503), never a panic.
func testClosedStoreIsUnavailable(t *testing.T, s db.Store) {
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	Save(t, s, NewCall("c1", "alice", 1000, "bob"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, db.ErrClosed) || !errors.Is(err, calls.ErrUnavailable) {
			t.Errorf("%s after Close: %v, want db.ErrClosed (calls.ErrUnavailable)", what, err)
		}
	}
	check("Update", s.Update(ctx, func(calls.Tx) error { return nil }))
	_, err := s.Call(ctx, "c1")
	check("Call", err)
	_, err = s.PutIdempotency(ctx, record("sc", "k", "fp", 200, "{}", 0, 100))
	check("PutIdempotency", err)
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}
}

// BusyUsers answers who is accepted in a started call other than the one
// excepted: for one user and for lists longer than a store checks in one
// statement, with duplicates, unknown users, a user busy in two calls, one
// busy only in the excepted call and one whose call ended; sorted, each
// once.
func testBusyUsers(t *testing.T, s db.Store) {
	ctx := context.Background()
	var want []string
	for i := range 20 {
		u := fmt.Sprintf("u%02d", i)
		Save(t, s, NewCall("busy-"+u, u, 1000, "callee-"+u)) // the caller is accepted: busy
		want = append(want, u)
	}
	Save(t, s, NewCall("two-a", "two", 1000, "x"))
	Save(t, s, NewCall("two-b", "two", 1000, "y"))
	Save(t, s, NewCall("solo", "only", 1000, "z"))
	Save(t, s, NewCall("endme", "ended", 1000, "w"))
	update(t, s, "endme", func(c *calls.Call) *calls.Change {
		c.State = calls.CallEnded
		return &calls.Change{Call: c}
	})
	want = append(want, "two")
	slices.Sort(want)

	busy := func(users []string, except string) []string {
		t.Helper()
		var got []string
		err := s.Update(ctx, func(tx calls.Tx) error {
			var err error
			got, err = tx.BusyUsers(ctx, users, except)
			return err
		})
		if err != nil {
			t.Fatalf("BusyUsers(%v, %s): %v", users, except, err)
		}
		return got
	}
	users := []string{"nobody", "only", "ended", "two", "u03", "u03", "z", "callee-u01"}
	for i := 19; i >= 0; i-- {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	if got := busy(users, "solo"); !slices.Equal(got, want) {
		t.Errorf("BusyUsers(%d users, except solo) = %v, want %v", len(users), got, want)
	}
	for _, tc := range []struct {
		user, except string
		want         []string
	}{
		{"only", "solo", nil},
		{"only", "other", []string{"only"}},
		{"two", "two-a", []string{"two"}},
		{"ended", "other", nil},
		{"nobody", "other", nil},
	} {
		if got := busy([]string{tc.user}, tc.except); !slices.Equal(got, tc.want) {
			t.Errorf("BusyUsers([%s], except %s) = %v, want %v", tc.user, tc.except, got, tc.want)
		}
	}
	// Two users (an invitee and the caller asked at once), one of them
	// named twice.
	for _, tc := range []struct {
		users []string
		want  []string
	}{
		{[]string{"two", "only"}, []string{"two"}}, // only is in solo alone
		{[]string{"nobody", "u05"}, []string{"u05"}},
		{[]string{"ended", "nobody"}, nil},
		{[]string{"u07", "u07"}, []string{"u07"}},
	} {
		if got := busy(tc.users, "solo"); !slices.Equal(got, tc.want) {
			t.Errorf("BusyUsers(%v, except solo) = %v, want %v", tc.users, got, tc.want)
		}
	}
	if got := busy(nil, "solo"); len(got) != 0 {
		t.Errorf("BusyUsers(none) = %v, want none", got)
	}
}

// StartedCalls counts the started calls a user is accepted in, up to the
// limit: the caller of each, not an ended one, not a pending invitee.
func testStartedCalls(t *testing.T, s db.Store) {
	ctx := context.Background()
	for i := range 5 {
		Save(t, s, NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob"))
	}
	Save(t, s, NewCall("gone", "alice", 1000, "carol"))
	update(t, s, "gone", func(c *calls.Call) *calls.Change {
		c.State = calls.CallEnded
		return &calls.Change{Call: c}
	})
	count := func(user string, limit int) int {
		t.Helper()
		var n int
		err := s.Update(ctx, func(tx calls.Tx) error {
			var err error
			n, err = tx.StartedCalls(ctx, user, limit)
			return err
		})
		if err != nil {
			t.Fatalf("StartedCalls(%s, %d): %v", user, limit, err)
		}
		return n
	}
	for _, tc := range []struct {
		user  string
		limit int
		want  int
	}{
		{"alice", 10, 5},
		{"alice", 3, 3},
		{"bob", 10, 0}, // invited, not accepted
		{"carol", 10, 0},
		{"nobody", 10, 0},
	} {
		if got := count(tc.user, tc.limit); got != tc.want {
			t.Errorf("StartedCalls(%s, %d) = %d, want %d", tc.user, tc.limit, got, tc.want)
		}
	}
}

// PruneCalls deletes the calls that ended before the cut-off, with their
// users; started calls and later ones stay, whatever their age.
func testPruneCalls(t *testing.T, s db.Store) {
	ctx := context.Background()
	add := func(id string, created, ended int64) {
		ch := NewCall(id, "alice", created, "bob")
		if ended > 0 {
			ch.Call.State, ch.Call.EndTime = calls.CallEnded, ended
			ch.Call.Users[1].State, ch.Call.Users[1].TimeoutAt = calls.StateRejected, 0
		}
		Save(t, s, ch)
	}
	add("ended-early", 10, 100)
	add("ended-later", 20, 200)
	add("ended-after-the-cut", 30, 900)
	add("started-long-ago", 5, 0)
	n, err := s.PruneCalls(ctx, 500)
	if err != nil || n != 2 {
		t.Fatalf("PruneCalls(500) = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"ended-early", "ended-later"} {
		if _, err := s.Call(ctx, id); !errors.Is(err, calls.ErrCallNotFound) {
			t.Errorf("Call(%s) after pruning: %v, want ErrCallNotFound", id, err)
		}
	}
	for _, user := range []string{"alice", "bob"} {
		list, err := s.ListCalls(ctx, user, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, c := range list {
			ids = append(ids, c.ID)
			if len(c.Users) != 2 {
				t.Errorf("%s kept with %d users, want 2", c.ID, len(c.Users))
			}
		}
		slices.Sort(ids)
		if want := []string{"ended-after-the-cut", "started-long-ago"}; !slices.Equal(ids, want) {
			t.Errorf("ListCalls(%s) after pruning = %v, want %v", user, ids, want)
		}
	}
	if n, err := s.PruneCalls(ctx, 500); err != nil || n != 0 {
		t.Errorf("PruneCalls(500) again = %d, %v; want 0", n, err)
	}
}

// The calls presence can change follow transitions that touch only users:
// an advanced call leaves CallerOfflineCalls when an invitee accepts, a
// dormant one (its invitees all done, its caller untracked) comes back
// when its caller invites again, and leaves when that invitation is
// answered. The stores keep this in a column Save derives from the whole
// call, the users included (migration 0007 / 0005).
func testPresenceFollowsUserChanges(t *testing.T, s db.Store) {
	ctx := context.Background()
	cfg := calls.Config{MaxCallUsers: 10}
	listed := func(id string) bool {
		t.Helper()
		var found bool
		err := s.Update(ctx, func(tx calls.Tx) error {
			list, err := tx.CallerOfflineCalls(ctx, "alice", 0, 100)
			for _, c := range list {
				found = found || c.ID == id
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	step := func(id, what string, f func(c *calls.Call) (*calls.Change, error), want bool) {
		t.Helper()
		update(t, s, id, func(c *calls.Call) *calls.Change {
			ch, err := f(c)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return ch
		})
		if got := listed(id); got != want {
			t.Fatalf("after %s: listed %v, want %v", what, got, want)
		}
	}
	alice := calls.Actor{UserID: "alice"}

	// Tracked (alice online), bob pending: listed; bob accepts: not.
	ch, _, err := calls.NewCall("adv-accepted-000001", alice, calls.InviteInput{Mode: calls.ModeAdvanced, Invitees: []string{"bob"}}, 1_000, cfg, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	Save(t, s, ch)
	if !listed(ch.Call.ID) {
		t.Fatal("a tracked call with bob pending is not listed")
	}
	step(ch.Call.ID, "bob's accept", func(c *calls.Call) (*calls.Change, error) {
		return calls.Answer(c, calls.Actor{UserID: "bob"}, true, "", 2_000)
	}, false)

	// Untracked (alice offline), carol pending: listed; carol rejects: the
	// call stays started with alice alone, not listed; alice invites dave
	// (still offline): listed again; dave rejects: not.
	ch, _, err = calls.NewCall("adv-dormant-0000001", alice, calls.InviteInput{Mode: calls.ModeAdvanced, Invitees: []string{"carol"}}, 1_000, cfg, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	Save(t, s, ch)
	if !listed(ch.Call.ID) {
		t.Fatal("an untracked call with carol pending is not listed")
	}
	id := ch.Call.ID
	step(id, "carol's reject", func(c *calls.Call) (*calls.Change, error) {
		return calls.Answer(c, calls.Actor{UserID: "carol"}, false, "", 2_000)
	}, false)
	step(id, "alice inviting dave", func(c *calls.Call) (*calls.Change, error) {
		ch, _, err := calls.CallingInvite(c, alice, calls.CallingInviteInput{Invitees: []string{"dave"}}, 3_000, cfg, nil)
		return ch, err
	}, true)
	step(id, "dave's reject", func(c *calls.Call) (*calls.Change, error) {
		return calls.Answer(c, calls.Actor{UserID: "dave"}, false, "", 4_000)
	}, false)
}

// A delivery report names the invitation it is about (its event's time):
// one that arrives after the invitee answered and was invited again in the
// same call is about the earlier invitation, and leaves the new one
// inviting (it has reached no device yet); the report of the new one
// applies. The invitation time must survive the store's round trip.
func testLateDeliveryOfAnEarlierInvitation(t *testing.T, s db.Store) {
	ctx := context.Background()
	clock := fakeclock.New(time.UnixMilli(10_000))
	svc := calls.NewService(calls.Options{Store: s, Clock: clock})
	alice, bob := calls.Actor{UserID: "alice"}, calls.Actor{UserID: "bob"}
	r, err := svc.Invite(ctx, alice, calls.InviteInput{Invitees: []string{"bob", "carol"}, Mode: calls.ModeAdvanced})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	if _, err := svc.Reject(ctx, bob, r.CallID, ""); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Second)
	if _, err := svc.CallingInvite(ctx, alice, r.CallID, calls.CallingInviteInput{Invitees: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var sent []int64
	for _, e := range evs {
		if e.Type == calls.EventReceived {
			sent = append(sent, e.Time)
		}
	}
	if len(sent) != 2 || sent[0] != 10_000 || sent[1] != 15_000 {
		t.Fatalf("bob's invitations sent at %v, want [10000 15000]", sent)
	}
	state := func() calls.UserState {
		t.Helper()
		c, err := s.Call(ctx, r.CallID)
		if err != nil {
			t.Fatal(err)
		}
		return c.User("bob").State
	}
	if err := svc.MarkDelivered(ctx, r.CallID, "bob", sent[0]); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != calls.StateInviting {
		t.Fatalf("after the late report of the first invitation bob is %s, want inviting", got)
	}
	if err := svc.MarkDelivered(ctx, r.CallID, "bob", sent[1]); err != nil {
		t.Fatal(err)
	}
	if got := state(); got != calls.StateReceived {
		t.Fatalf("after the report of the second invitation bob is %s, want received", got)
	}
}
