package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"callsig/calls"
	"callsig/db"
)

// Event ids are what Last-Event-ID resumes from: for each user they are
// unique, increase along the events of a change and from one committed
// Update to the next, and EventsAfter pages through them in that order.
// (Whether ids also follow one global order is the SQLite backend's own
// test: in cluster mode they are per user.)
func testEventIDsIncreasePerUser(t *testing.T, s db.Store) {
	ctx := context.Background()
	var mu sync.Mutex
	var changes []*calls.Change
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ch := NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob", "carol", "dave")
			// A second event for carol in the same change.
			ch.Events = append(ch.Events, calls.Event{UserID: "carol", CallID: ch.Call.ID,
				Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 1000})
			if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			changes = append(changes, ch)
			mu.Unlock()
		})
	}
	wg.Wait()
	seen := map[string]map[int64]bool{}
	for _, ch := range changes {
		if ch.Events[1].ID >= ch.Events[3].ID {
			t.Errorf("%s: carol's events got ids %d then %d, want increasing along the change",
				ch.Call.ID, ch.Events[1].ID, ch.Events[3].ID)
		}
		for _, ev := range ch.Events {
			if ev.ID <= 0 {
				t.Fatalf("%s: event without an id: %+v", ch.Call.ID, ev)
			}
			if seen[ev.UserID] == nil {
				seen[ev.UserID] = map[int64]bool{}
			}
			if seen[ev.UserID][ev.ID] {
				t.Fatalf("event id %d given twice to %s", ev.ID, ev.UserID)
			}
			seen[ev.UserID][ev.ID] = true
		}
	}
	// After, where the store knows it, names the event just before in the
	// recipient's log.
	before := map[int64]int64{}
	for _, u := range []string{"bob", "carol", "dave"} {
		var prev int64
		for _, ev := range events(t, s, u) {
			before[ev.ID] = prev
			prev = ev.ID
		}
	}
	for _, ch := range changes {
		for _, ev := range ch.Events {
			if ev.After != 0 && ev.After != before[ev.ID] {
				t.Errorf("%s's event %d has After %d, want %d (the one before it in the log)",
					ev.UserID, ev.ID, ev.After, before[ev.ID])
			}
		}
	}
	all := events(t, s, "carol")
	if len(all) != 100 {
		t.Fatalf("EventsAfter(carol) = %d events, want 100", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID <= all[i-1].ID {
			t.Fatalf("EventsAfter(carol) not in id order at %d: %d after %d", i, all[i].ID, all[i-1].ID)
		}
	}
	page, _ := s.EventsAfter(ctx, "carol", all[9].ID, 5)
	if len(page) != 5 || page[0].ID != all[10].ID || page[4].ID != all[14].ID {
		t.Errorf("EventsAfter(carol, %d, 5) = %+v, want events 10..14", all[9].ID, page)
	}
	ev := all[0]
	if ev.UserID != "carol" || ev.Time != 1000 || !json.Valid(ev.Data) ||
		(ev.Type != calls.EventReceived && ev.Type != calls.EventUserStateChanged) {
		t.Errorf("event read back = %+v", ev)
	}
	// An Update that returned (committed) comes after every earlier one.
	later := NewCall("later", "erin", 2000, "carol")
	Save(t, s, later)
	if id := later.Events[0].ID; id <= all[len(all)-1].ID {
		t.Errorf("a later commit gave carol id %d, not above %d", id, all[len(all)-1].ID)
	}
	// A device-addressed event is in its user's log, device kept.
	update(t, s, "later", func(c *calls.Call) *calls.Change {
		return &calls.Change{Call: c, Events: []calls.Event{{UserID: "carol", Device: "phone", CallID: "later",
			Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 2001}}}
	})
	if evs, _ := s.EventsAfter(ctx, "carol", later.Events[0].ID, 10); len(evs) != 1 || evs[0].Device != "phone" {
		t.Errorf("device event read back = %+v", evs)
	}
}

// Every event of a change gets a larger id than the one before it, and
// an invitation addressed to a user who is not in the call fails the
// change, leaving nothing of it: alone in its change, or among others.
func testChangeEventsInOrderAndInvitationsChecked(t *testing.T, s db.Store) {
	ctx := context.Background()
	ch := NewCall("ordered", "alice", 1000, "bob", "carol", "dave")
	for _, u := range []string{"alice", "carol", "alice", "bob"} {
		ch.Events = append(ch.Events, calls.Event{UserID: u, CallID: "ordered",
			Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 1000})
	}
	Save(t, s, ch)
	for i := 1; i < len(ch.Events); i++ {
		if ch.Events[i].ID <= ch.Events[i-1].ID {
			t.Fatalf("event %d of the change got id %d after %d, want increasing", i, ch.Events[i].ID, ch.Events[i-1].ID)
		}
	}
	pending, err := s.PendingInvitations(ctx, "carol", 10)
	if err != nil || len(pending) != 1 || pending[0].ID != ch.Events[1].ID {
		t.Errorf("carol's pending invitations = %+v, %v; want the one of id %d", pending, err, ch.Events[1].ID)
	}
	for _, tc := range []struct {
		name    string
		invitee string
		others  int
	}{{"alone", "mallory", 0}, {"among others", "mallory", 2}} {
		ch := NewCall("bad-"+strings.ReplaceAll(tc.name, " ", "-"), "alice", 2000, "bob")
		ch.Events = append(ch.Events[:0], calls.Event{UserID: tc.invitee, CallID: ch.Call.ID,
			Type: calls.EventReceived, Data: json.RawMessage(`{}`), Time: 2000})
		for range tc.others {
			ch.Events = append(ch.Events, calls.Event{UserID: "alice", CallID: ch.Call.ID,
				Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 2000})
		}
		err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) })
		if err == nil {
			t.Errorf("%s: an invitation to %s, not in the call, saved", tc.name, tc.invitee)
		}
		if _, err := s.Call(ctx, ch.Call.ID); !errors.Is(err, calls.ErrCallNotFound) {
			t.Errorf("%s: Call after the failed save = %v, want ErrCallNotFound", tc.name, err)
		}
		if evs := events(t, s, tc.invitee); len(evs) != 0 {
			t.Errorf("%s: %d events of the failed change in the log", tc.name, len(evs))
		}
	}
}

// A change with more events than a store writes in one statement (37,
// over three users; SQLite inserts up to maxEventRows at once) keeps them
// in order: ids increasing in the change's order, each event's After the
// user's previous id where the store sets it, every event in its user's
// log with its own data, and the user's newest id the last one.
func testManyEventsInOneChange(t *testing.T, s db.Store) {
	ctx := context.Background()
	first := NewCall("many", "alice", 1000, "bob", "carol")
	Save(t, s, first)
	before := map[string]int64{}
	for _, ev := range first.Events {
		before[ev.UserID] = max(before[ev.UserID], ev.ID)
	}
	users := []string{"bob", "carol", "dave"}
	var ch *calls.Change
	update(t, s, "many", func(c *calls.Call) *calls.Change {
		ch = &calls.Change{Call: c}
		for i := range 37 {
			ch.Events = append(ch.Events, calls.Event{UserID: users[i%len(users)], CallID: "many",
				Type: calls.EventUserStateChanged, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), Time: 2000})
		}
		return ch
	})
	last := maps.Clone(before)
	for i, ev := range ch.Events {
		if i > 0 && ev.ID <= ch.Events[i-1].ID {
			t.Fatalf("event %d got id %d after %d, want increasing", i, ev.ID, ch.Events[i-1].ID)
		}
		if ev.After != 0 && ev.After != last[ev.UserID] {
			t.Errorf("event %d to %s: After = %d, want %d or 0 (not known)", i, ev.UserID, ev.After, last[ev.UserID])
		}
		last[ev.UserID] = ev.ID
	}
	for _, u := range users {
		var want []string
		for i, ev := range ch.Events {
			if ev.UserID == u {
				want = append(want, fmt.Sprintf(`%d {"i":%d}`, ev.ID, i))
			}
		}
		var got []string
		for _, ev := range events(t, s, u) {
			if ev.CallID == "many" && ev.ID > before[u] {
				got = append(got, fmt.Sprintf("%d %s", ev.ID, ev.Data))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s's log = %v, want %v", u, got, want)
		}
	}
	newest, err := s.NewestEventIDs(ctx, users)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if newest[u] != last[u] {
			t.Errorf("NewestEventIDs[%s] = %d, want %d", u, newest[u], last[u])
		}
	}
}

func testPendingInvitations(t *testing.T, s db.Store) {
	ctx := context.Background()
	Save(t, s, NewCall("c1", "alice", 1000, "bob"))
	Save(t, s, NewCall("c2", "carol", 1000, "bob"))
	Save(t, s, NewCall("c3", "dave", 1000, "bob"))

	// c1 re-invites bob: the newest invitation event of c1 is the one to replay.
	// c2: bob accepted, nothing to replay. c3 ended.
	var reinvite *calls.Event // its ID is set by the time Update returns
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
		reinvite = &ch.Events[0]
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

// The replay is capped to the newest invitations, and the invitations an
// invitee is still to receive are found below a bound.
func testPendingInvitationsCapAndUnreceived(t *testing.T, s db.Store) {
	ctx := context.Background()
	var ids []int64
	for i := range 10 {
		ch := NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob")
		Save(t, s, ch)
		ids = append(ids, ch.Events[0].ID)
	}
	got, err := s.PendingInvitations(ctx, "bob", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != ids[7] || got[2].ID != ids[9] || got[0].CallID != "c7" {
		t.Fatalf("PendingInvitations(bob, 3) = %+v, want the newest three in id order", got)
	}

	// c3 was received, c4 timed out (its deadline cleared).
	err = s.Update(ctx, func(tx calls.Tx) error {
		for id, f := range map[string]func(u *calls.CallUser){
			"c3": func(u *calls.CallUser) { u.State = calls.StateReceived },
			"c4": func(u *calls.CallUser) { u.State, u.TimeoutAt = calls.StateTimeout, 0 },
		} {
			c, err := tx.Call(ctx, id)
			if err != nil {
				return err
			}
			f(c.User("bob"))
			markDirty(c.User("bob"))
			if err := tx.Save(ctx, &calls.Change{Call: c}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.UnreceivedInvitations(ctx, "bob", ids[5], 100)
	if err != nil {
		t.Fatal(err)
	}
	var callIDs []string
	for _, e := range got {
		callIDs = append(callIDs, e.CallID)
	}
	if strings.Join(callIDs, ",") != "c0,c1,c2,c5" {
		t.Fatalf("UnreceivedInvitations(bob, id of c5) = %v, want c0,c1,c2,c5", callIDs)
	}
	if got, _ := s.UnreceivedInvitations(ctx, "bob", ids[5], 2); len(got) != 1 || got[0].CallID != "c5" {
		t.Fatalf("UnreceivedInvitations limited to 2 = %+v, want c5 only (c4 is no longer live)", got)
	}
}

// Pruning deletes the events older than the cut-off, however many (more
// than one internal batch here), and the bounds of the log follow: the
// oldest id kept moves up, the last id ever given does not come down.
func testPruneEventsAndBounds(t *testing.T, s db.Store) {
	ctx := context.Background()
	if id, err := s.LastEventID(ctx); err != nil || id != 0 {
		t.Errorf("LastEventID on empty log = %d (%v), want 0", id, err)
	}
	if id, err := s.OldestEventID(ctx); err != nil || id != 0 {
		t.Errorf("OldestEventID on empty log = %d (%v), want 0", id, err)
	}
	// 2500 old events (the invitation and 2499 more) and 10 recent ones.
	ch := NewCall("c1", "alice", 1000, "bob")
	for i := range 2509 {
		at := int64(1000)
		if i >= 2499 {
			at = 9000
		}
		ch.Events = append(ch.Events, calls.Event{UserID: "bob", CallID: "c1",
			Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: at})
	}
	Save(t, s, ch)
	last, err := s.LastEventID(ctx)
	if err != nil || last < ch.Events[len(ch.Events)-1].ID {
		t.Fatalf("LastEventID = %d (%v), want at least the last saved id %d", last, err, ch.Events[len(ch.Events)-1].ID)
	}
	n, err := s.PruneEvents(ctx, 5000)
	if err != nil || n != 2500 {
		t.Fatalf("PruneEvents = %d (%v), want 2500", n, err)
	}
	left := events(t, s, "bob")
	if len(left) != 10 || left[0].ID != ch.Events[2500].ID {
		t.Fatalf("%d events left, want the 10 recent ones", len(left))
	}
	if oldest, _ := s.OldestEventID(ctx); oldest != left[0].ID {
		t.Errorf("OldestEventID = %d, want %d", oldest, left[0].ID)
	}
	if n, _ := s.PruneEvents(ctx, 99999); n != 10 {
		t.Errorf("pruning the rest deleted %d, want 10", n)
	}
	if got, _ := s.LastEventID(ctx); got != last {
		t.Errorf("LastEventID after emptying the log = %d, want %d (ids are never reused)", got, last)
	}
	if got, _ := s.OldestEventID(ctx); got != 0 {
		t.Errorf("OldestEventID of an emptied log = %d, want 0", got)
	}
	// A user none of whose events is left is as one never seen (PostgreSQL
	// kept a row per user ever sent an event, made-up invitees included).
	if got, err := s.NewestEventIDs(ctx, []string{"bob"}); err != nil || len(got) != 0 {
		t.Errorf("NewestEventIDs of a user whose events were all pruned = %v (%v), want none", got, err)
	}
	// Times out of id order (a change's time is taken before its write; a
	// node's clock may be behind another's): what is kept is a suffix of
	// the ids, or a client resuming between the two skips the newer id.
	skew := NewCall("c3", "alice", 20_000, "bob")
	for _, at := range []int64{20_005, 19_995, 30_000} {
		skew.Events = append(skew.Events, calls.Event{UserID: "bob", CallID: "c3",
			Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: at})
	}
	Save(t, s, skew)
	if _, err := s.PruneEvents(ctx, 20_000); err != nil {
		t.Fatal(err)
	}
	oldest, _ := s.OldestEventID(ctx)
	var ids []int64
	for _, e := range events(t, s, "bob") {
		ids = append(ids, e.ID)
	}
	for _, e := range skew.Events[1:] {
		if e.ID >= oldest && !slices.Contains(ids, e.ID) {
			t.Errorf("event %d (time %d) pruned while older id %d stays: kept %v", e.ID, e.Time, oldest, ids)
		}
	}
	if n, _ := s.PruneEvents(ctx, 99999); n == 0 {
		t.Errorf("pruning the rest deleted nothing")
	}
	// A new event after the log was emptied gets a fresh id.
	next := NewCall("c2", "alice", 10_000, "bob")
	Save(t, s, next)
	if next.Events[0].ID <= last {
		t.Errorf("first id after emptying = %d, want above %d", next.Events[0].ID, last)
	}
}

// EventRecipients names the distinct users of a range of event ids, at
// most limit of them, saying when there may be more.
func testEventRecipients(t *testing.T, s db.Store) {
	ctx := context.Background()
	a := NewCall("a", "alice", 1000, "bob", "carol")
	Save(t, s, a)
	b := NewCall("b", "dave", 1000, "bob", "erin", "frank")
	Save(t, s, b)
	from, to := a.Events[0].ID, b.Events[2].ID
	users, more, err := s.EventRecipients(ctx, from, to, 10)
	slices.Sort(users)
	if err != nil || more || strings.Join(users, ",") != "bob,carol,erin,frank" {
		t.Errorf("EventRecipients(all) = %v, more %v (%v), want bob,carol,erin,frank", users, more, err)
	}
	users, more, err = s.EventRecipients(ctx, from, to, 2)
	if err != nil || !more || len(users) != 2 {
		t.Errorf("EventRecipients(limit 2) = %v, more %v (%v), want 2 and more", users, more, err)
	}
	users, _, err = s.EventRecipients(ctx, b.Events[1].ID, b.Events[1].ID, 10)
	if err != nil || strings.Join(users, ",") != "erin" {
		t.Errorf("EventRecipients(one id) = %v (%v), want erin", users, err)
	}
	if users, more, _ := s.EventRecipients(ctx, to+1, to+100, 10); len(users) != 0 || more {
		t.Errorf("EventRecipients past the log = %v, more %v", users, more)
	}
}

// NewestEventIDs gives, in one call, each listed user's newest event id:
// what the SSE hub's periodic catch-up compares its streams' positions
// with. Users without events are left out; the answer follows new commits.
func testNewestEventIDs(t *testing.T, s db.Store) {
	ctx := context.Background()
	if got, err := s.NewestEventIDs(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("NewestEventIDs(none) = %v (%v), want empty", got, err)
	}
	a := NewCall("a", "alice", 1000, "bob", "carol")
	Save(t, s, a)
	b := NewCall("b", "dave", 1000, "bob")
	b.Events = append(b.Events, calls.Event{UserID: "bob", CallID: "b",
		Type: calls.EventUserStateChanged, Data: json.RawMessage(`{}`), Time: 1000})
	Save(t, s, b)
	got, err := s.NewestEventIDs(ctx, []string{"bob", "carol", "nobody", "alice"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"bob": b.Events[1].ID, "carol": a.Events[1].ID}
	if len(got) != len(want) || got["bob"] != want["bob"] || got["carol"] != want["carol"] {
		t.Errorf("NewestEventIDs = %v, want %v (alice and nobody have no events)", got, want)
	}
	c := NewCall("c", "erin", 2000, "carol")
	Save(t, s, c)
	got, err = s.NewestEventIDs(ctx, []string{"carol"})
	if err != nil || got["carol"] != c.Events[0].ID {
		t.Errorf("NewestEventIDs(carol) after a new event = %v (%v), want %d", got, err, c.Events[0].ID)
	}
	// Many users in one call (a catch-up batch).
	users := make([]string, 0, 200)
	for i := range 200 {
		users = append(users, fmt.Sprintf("u%03d", i))
	}
	many := NewCall("many", "zed", 3000, users[:100]...)
	Save(t, s, many)
	got, err = s.NewestEventIDs(ctx, users)
	if err != nil || len(got) != 100 || got["u000"] != many.Events[0].ID || got["u099"] != many.Events[99].ID {
		t.Errorf("NewestEventIDs(200 users, 100 with events) = %d entries (%v), u000 %d want %d",
			len(got), err, got["u000"], many.Events[0].ID)
	}
}
