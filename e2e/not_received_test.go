package e2e

import (
	"strconv"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// With enableNotReceivedCheck an invitee with no stream goes notYetReceived
// after CALLSIG_NOT_RECEIVED_AFTER; when it connects it gets the
// invitation (with its own log id) and goes received.
func TestNotYetReceivedThenReceived(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := listen(t, s, "alice", "")
		c1 := s.Client("alice").Invite(map[string]any{"enableNotReceivedCheck": true}, "bob").CallID
		alice.expect(ev(calls.EventCreated, c1))

		s.Advance(s.Config.NotReceivedAfter - time.Millisecond)
		alice.nothing()
		s.Advance(time.Millisecond)
		alice.expect(changed(c1, "bob=notYetReceived"))

		bob := listen(t, s, "bob", "")
		inv := bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))[0]
		alice.expect(changed(c1, "bob=received"))
		log := s.Log("bob")
		if inv.LastEventID != strconv.FormatInt(log[0].ID, 10) || log[0].Type != calls.EventReceived {
			t.Fatalf("pending invitation sent with id %s, the log has %d %s", inv.LastEventID, log[0].ID, log[0].Type)
		}
		if st := testkit.UserState(s.Client("alice").GetCall(c1), "bob"); st != calls.StateReceived {
			t.Fatalf("bob: %s, want received", st)
		}
	})
}

// Without the check an offline invitee stays inviting; it gets the
// invitation when its first stream opens, and the caller then sees
// received. The stream's Last-Event-ID then sits at the log head, so a
// reconnection does not replay history.
func TestLateOnlineInvitee(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := listen(t, s, "alice", "")
		c1 := s.Client("alice").Invite(nil, "bob").CallID
		c2 := s.Client("carol").Invite(nil, "bob").CallID
		alice.expect(ev(calls.EventCreated, c1))
		s.Advance(time.Minute)
		alice.nothing()

		bob := listen(t, s, "bob", "")
		bob.expect(ev(calls.EventReceived, c1), ev(calls.EventReceived, c2))
		bob.expectAnyOrder(changed(c1, "bob=received"), changed(c2, "bob=received"))
		alice.expect(changed(c1, "bob=received"))

		// A second new stream gets them again: they are still pending.
		again := listen(t, s, "bob", "tablet")
		again.expect(ev(calls.EventReceived, c1), ev(calls.EventReceived, c2))
		again.nothing()
	})
}

// An invitation that timed out before the invitee connected is not sent:
// the caller saw the timeout, the invitee's new stream has nothing pending.
func TestTimedOutInvitationIsNotPending(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := listen(t, s, "alice", "")
		c1 := s.Client("alice").Invite(map[string]any{"timeout": 10}, "bob").CallID
		alice.expect(ev(calls.EventCreated, c1))
		s.Advance(10 * time.Second)
		alice.expect(changed(c1, "bob=timeout"))

		bob := listen(t, s, "bob", "")
		bob.nothing()
		if bob.Stream.LastEventID() == "" {
			t.Fatal("a new stream should move the client to the log head")
		}
	})
}
