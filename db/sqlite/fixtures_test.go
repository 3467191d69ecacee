package sqlite

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"callsig/calls"
)

// openTest opens a store on a fresh file and closes it when the test ends.
func openTest(t testing.TB) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "callsig.db"))
}

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newCall returns the change that creates a started call by caller inviting
// invitees at time now, with an event for each invitee.
func newCall(id, caller string, now int64, invitees ...string) *calls.Change {
	c := &calls.Call{
		ID: id, Caller: caller, Mode: calls.ModeGeneral, State: calls.CallStarted,
		Timeout: 30, ExtendedData: "x", CreateTime: now,
		Users: []*calls.CallUser{{UserID: caller, State: calls.StateAccepted, UpdateTime: now, AcceptTime: now}},
	}
	ch := &calls.Change{Call: c, Created: true}
	for _, u := range invitees {
		c.Users = append(c.Users, &calls.CallUser{
			UserID: u, State: calls.StateInviting, Inviter: caller, UpdateTime: now, InviteTime: now,
			TimeoutAt: now + 30_000,
		})
		ch.Events = append(ch.Events, calls.Event{
			UserID: u, CallID: id, Type: calls.EventReceived, Time: now,
			Data: json.RawMessage(`{"callID":"` + id + `"}`),
		})
	}
	return ch
}

// save runs one Save in its own Update.
func save(t testing.TB, s *Store, ch *calls.Change) {
	t.Helper()
	err := s.Update(context.Background(), func(tx calls.Tx) error { return tx.Save(context.Background(), ch) })
	if err != nil {
		t.Fatalf("save %s: %v", ch.Call.ID, err)
	}
}

// count returns SELECT COUNT(*) FROM <from...>.
func count(t testing.TB, s *Store, from string, args ...any) int {
	t.Helper()
	var n int
	if err := s.rdb.Get(&n, "SELECT COUNT(*) FROM "+from, args...); err != nil {
		t.Fatalf("count %s: %v", from, err)
	}
	return n
}
