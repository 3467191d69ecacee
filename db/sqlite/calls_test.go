package sqlite

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/fakeclock"
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

// The caller-offline queries select exactly the calls the pure predicate
// calls.CallerOfflineApplies accepts (tracked ones only, for the start-up
// arming), including a lone caller's advanced call: the one predicate of
// arming and clearing (issue 9, defect 5).
func TestCallerOfflineCallsMatchThePredicate(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var all []*calls.Change
	add := func(ch *calls.Change, tracked bool) {
		ch.Call.CallerTracked = tracked
		save(t, s, ch)
		all = append(all, ch)
	}
	add(newCall("pending", "alice", 1000, "bob"), true)
	answered := newCall("answered", "alice", 1000, "bob")
	answered.Call.Users[1].State, answered.Call.Users[1].AcceptTime = calls.StateAccepted, 1500
	add(answered, true)
	quitAfterAccept := newCall("quit", "alice", 1000, "bob")
	quitAfterAccept.Call.Mode = calls.ModeAdvanced
	quitAfterAccept.Call.Users[1].State, quitAfterAccept.Call.Users[1].AcceptTime = calls.StateQuit, 1500
	add(quitAfterAccept, true)
	lone := newCall("lone", "alice", 1000, "bob")
	lone.Call.Mode = calls.ModeAdvanced
	lone.Call.Users[1].State = calls.StateRejected
	add(lone, true)
	untrackedLone := newCall("untracked-lone", "alice", 1000, "bob")
	untrackedLone.Call.Mode = calls.ModeAdvanced
	untrackedLone.Call.Users[1].State = calls.StateTimeout
	add(untrackedLone, false)
	ended := newCall("ended", "alice", 1000, "bob")
	ended.Call.State = calls.CallEnded
	add(ended, true)
	add(newCall("others", "carol", 1000, "bob"), true)
	add(newCall("untracked", "dave", 1000, "erin"), false)

	want := func(caller string, trackedOnly bool) []string {
		var ids []string
		for _, ch := range all {
			c := ch.Call
			if calls.CallerOfflineApplies(c) && (caller == "" || c.Caller == caller) && (!trackedOnly || c.CallerTracked) {
				ids = append(ids, c.ID)
			}
		}
		return ids
	}
	idsOf := func(list []*calls.Call) []string {
		var ids []string
		for _, c := range list {
			if len(c.Users) != 2 {
				t.Errorf("%s loaded with %d users, want 2", c.ID, len(c.Users))
			}
			ids = append(ids, c.ID)
		}
		return ids
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		list, err := tx.CallerOfflineCalls(ctx, "alice")
		if err != nil {
			return err
		}
		if got, want := idsOf(list), want("alice", false); !slices.Equal(got, want) || !slices.Contains(got, "lone") {
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
		if got, want := idsOf(paged), want("", true); !slices.Equal(got, want) || len(got) != 3 {
			t.Errorf("TrackedCallerOfflineCalls = %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The production caller-offline and idempotency queries use their indexes
// (no scan of the whole call history or key table, no sort).
func TestCallerOfflineAndIdempotencyPlans(t *testing.T) {
	s := openTest(t)
	for _, q := range []struct {
		name, query, index string
		args               []any
	}{
		{"caller's offline calls", sqlCallerOfflineCalls, "calls_started_by_caller", []any{"u"}},
		{"tracked offline calls", sqlTrackedCallerOfflineCalls, "calls_tracked_started", []any{0, 10}},
		{"idempotency record", selectIdempotency, "sqlite_autoindex_idempotency_keys_1", []any{"s", "k", 1}},
	} {
		rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+q.query, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		t.Logf("%s: %s", q.name, strings.Join(plan, "; "))
		if p := strings.Join(plan, "; "); !strings.Contains(p, q.index) || strings.Contains(p, "TEMP B-TREE") || strings.Contains(p, "SCAN c") {
			t.Errorf("%s: plan %q, want it to use %s without a scan or sort", q.name, p, q.index)
		}
	}
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
func TestServiceRunArmsTrackedCallersAndStops(t *testing.T) {
	s := openTest(t)
	clock := fakeclock.New(time.UnixMilli(10_000))
	for _, c := range []struct {
		id, caller string
		tracked    bool
	}{{"gone", "alice", true}, {"back", "bob", true}, {"backend", "carol", false}} {
		ch := newCall(c.id, c.caller, 1000, "dave")
		ch.Call.CallerTracked = c.tracked
		save(t, s, ch)
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
