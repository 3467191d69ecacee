package e2e

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// A client that drops its connection and comes back with Last-Event-ID gets
// exactly the events it missed, once each, then the live ones.
func TestResumeAfterDroppedConnection(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bob := listen(t, s, "bob", "")
		alice := s.Client("alice")

		c1 := alice.Invite(nil, "bob").CallID
		bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

		bob.drop()
		alice.Action(c1, "cancel", nil).Want(http.StatusOK)
		c2 := alice.Invite(nil, "bob").CallID
		if st := testkit.UserState(alice.GetCall(c2), "bob"); st != calls.StateInviting {
			t.Fatalf("bob offline: state %s, want inviting", st)
		}

		bob.reconnect()
		bob.expect(ev(calls.EventCancelled, c1), changed(c1, "bob=cancelled"), ev(calls.EventReceived, c2),
			changed(c2, "bob=received")) // the replayed invitation counts as delivered

		// Again, resuming through ?lastEventID= (the first URL of an EventSource).
		bob.drop()
		alice.Action(c2, "cancel", nil).Want(http.StatusOK)
		bob.Stream = s.OpenStream(testkit.StreamOptions{User: "bob", Query: url.Values{"lastEventID": {bob.Stream.LastEventID()}}})
		bob.expect(ev(calls.EventCancelled, c2), changed(c2, "bob=cancelled"))

		marker := s.Client("carol").Invite(nil, "bob").CallID
		bob.expect(ev(calls.EventReceived, marker), changed(marker, "bob=received"))
		bob.seenExactlyTheLog()
	})
}

// The Last-Event-ID header wins over ?lastEventID=: an EventSource keeps its
// first URL when it reconnects and sends its newer id in the header.
func TestResumeHeaderWinsOverQuery(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bob := listen(t, s, "bob", "")
		c1 := s.Client("alice").Invite(nil, "bob").CallID
		first := bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
		bob.drop()

		st := s.OpenStream(testkit.StreamOptions{User: "bob", LastEventID: first[0].LastEventID, Query: url.Values{"lastEventID": {"0"}}})
		if e := st.Next(eventWait); e.LastEventID != first[1].LastEventID {
			t.Fatalf("resumed at %v, want the event after %s", e, first[0].LastEventID)
		}
		st.NoEvent(quietWindow)
	})
}

// Streams end when the server stops; the clients resume with Last-Event-ID
// on the restarted server (same database) and miss nothing, whether the
// events came before the stop (unread) or while they were away.
func TestResumeAcrossRestart(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bob := listen(t, s, "bob", "")
		alice := listen(t, s, "alice", "")
		c1 := s.Client("alice").Invite(nil, "bob").CallID
		bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
		alice.expect(ev(calls.EventCreated, c1), changed(c1, "bob=received"))

		// Events committed just before the stop, not read by the story yet.
		c2 := s.Client("carol").Invite(nil, "bob").CallID
		s.Restart()
		bob.WaitEnded(eventWait)
		alice.WaitEnded(eventWait)

		s.Client("alice").Action(c1, "cancel", nil).Want(http.StatusOK)
		bob.reconnect()
		alice.reconnect()

		// c2's delivery is reported before the stop if its stream flushed it,
		// else after the replay: either order is right.
		bob.expect(ev(calls.EventReceived, c2))
		bob.expectAnyOrder(changed(c2, "bob=received"), ev(calls.EventCancelled, c1), changed(c1, "bob=cancelled"))
		alice.expect(changed(c1, "bob=cancelled"))

		marker := s.Client("zed").Invite(nil, "alice", "bob").CallID
		bob.expect(ev(calls.EventReceived, marker))
		alice.expect(ev(calls.EventReceived, marker))
		bob.seenExactlyTheLog()
		alice.seenExactlyTheLog()
	})
}

// Reconnecting with the id just received and nothing new: the stream says
// nothing, and the client's Last-Event-ID stays where it was (the stream's
// first block repeats it for clients that parse exactly as WHATWG says).
func TestResumeWithNothingNew(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bob := listen(t, s, "bob", "")
		c1 := s.Client("alice").Invite(nil, "bob").CallID
		bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
		last := bob.Stream.LastEventID()
		bob.reconnect()
		wait.For(t, eventWait, "the opening block", func() bool { return bob.Retry() > 0 })
		bob.nothing()
		if got := bob.Stream.LastEventID(); got != last {
			t.Fatalf("last event ID after reconnecting: %q, want %q", got, last)
		}
	})
}

// A Last-Event-ID older than what the log keeps gets `event: reset` first,
// then what a new stream gets: the pending invitations.
func TestResetWhenLastEventIDWasPruned(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bob := listen(t, s, "bob", "")
		alice := s.Client("alice")
		c1 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
		bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
		old := bob.Stream.LastEventID()
		bob.drop()
		alice.Action(c1, "cancel", nil).Want(http.StatusOK) // missed by bob

		s.Advance(s.Config.EventRetention + time.Hour)
		wait.For(t, eventWait, "pruning", func() bool {
			oldest, err := s.App.Store.OldestEventID(context.Background())
			return err == nil && oldest == 0
		})
		c2 := alice.Invite(nil, "bob").CallID

		st := s.Stream("bob", "", old)
		if e := st.Next(eventWait); e.Type != "reset" {
			t.Fatalf("first event %v, want reset", e)
		}
		if e := st.Next(eventWait); e.Type != string(calls.EventReceived) || e.CallID() != c2 {
			t.Fatalf("after the reset %v, want the pending invitation %s", e, c2)
		}
		st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool { return e.CallID() == c2 }, eventWait)

		// An id this server never gave, or no number at all: reset too.
		for _, id := range []string{"999999999", "not-a-number"} {
			st := s.Stream("bob", "", id)
			if e := st.Next(eventWait); e.Type != "reset" {
				t.Fatalf("Last-Event-ID %s: first event %v, want reset", id, e)
			}
			if e := st.Next(eventWait); e.Type != string(calls.EventReceived) || e.CallID() != c2 {
				t.Fatalf("Last-Event-ID %s: after the reset %v", id, e)
			}
			st.NoEvent(quietWindow)
		}
	})
}
