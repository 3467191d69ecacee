package e2e

import (
	"net/http"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// offlineArmed waits until the server has seen the caller's last stream
// close and armed the caller-offline deadline of call id.
func offlineArmed(t *testing.T, s *testkit.Server, id string) int64 {
	t.Helper()
	var at int64
	waitUntil(t, "the caller-offline deadline", func() bool {
		at = loadCall(t, s, id).CallerOfflineAt
		return at != 0
	})
	return at
}

// A caller whose every stream stays closed for CALLSIG_HEARTBEAT_TIMEOUT,
// with nobody accepted, has the call cancelled for all pending invitees,
// and the call ends.
func TestCallerOfflineCancelsTheCall(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	grace := s.Config.HeartbeatTimeout
	alice := listen(t, s, "alice", "")
	tab := listen(t, s, "alice", "tab") // two streams: offline only when both close
	bob := listen(t, s, "bob", "")
	c1 := s.Client("alice").Invite(map[string]any{"timeout": 600}, "bob", "carol").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

	alice.drop()
	s.Advance(2 * grace) // one stream still open: nothing happens
	bob.nothing()
	if c := loadCall(t, s, c1); c.CallerOfflineAt != 0 || c.State != calls.CallStarted {
		t.Fatalf("with a stream open: offline at %d, state %s", c.CallerOfflineAt, c.State)
	}

	tab.drop()
	if at := offlineArmed(t, s, c1); at != s.Now()+grace.Milliseconds() {
		t.Fatalf("offline deadline %d, want now+grace %d", at, s.Now()+grace.Milliseconds())
	}
	s.Advance(grace - time.Millisecond)
	bob.nothing()
	s.Advance(time.Millisecond)
	e := bob.expect(ev(calls.EventCancelled, c1), changed(c1, "bob=cancelled", "carol=cancelled"))[0].Fields()
	if e["inviter"] != "alice" {
		t.Fatalf("callInvitationCancelled %v", e)
	}
	if c := s.Client("bob").GetCall(c1); c.State != calls.CallEnded || c.EndTime != s.Now() {
		t.Fatalf("call after the caller went offline: %s at %d", c.State, c.EndTime)
	}
}

// A caller that comes back within the grace period keeps its call.
func TestCallerBackWithinGrace(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	grace := s.Config.HeartbeatTimeout
	alice := listen(t, s, "alice", "")
	bob := listen(t, s, "bob", "")
	c1 := s.Client("alice").Invite(nil, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

	alice.drop()
	offlineArmed(t, s, c1)
	s.Advance(grace / 2)
	alice.reconnect()
	waitUntil(t, "the deadline to clear", func() bool { return loadCall(t, s, c1).CallerOfflineAt == 0 })
	s.Advance(2 * grace)
	bob.nothing()
	if c := s.Client("bob").GetCall(c1); c.State != calls.CallStarted || testkit.UserState(c, "bob") != calls.StateReceived {
		t.Fatalf("call after the caller came back: %+v", c)
	}
}

// The rule applies only to callers that had a stream: a backend calling the
// API is never treated as offline. Nor does it apply once someone accepted.
func TestCallerOfflineRuleScope(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	grace := s.Config.HeartbeatTimeout
	bob := listen(t, s, "bob", "")
	c1 := s.Client("backend").Invite(nil, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

	alice := listen(t, s, "alice", "")
	c2 := s.Client("alice").Invite(nil, "bob", "carol").CallID
	bob.expect(ev(calls.EventReceived, c2), changed(c2, "bob=received"))
	s.Client("bob").Action(c2, "accept", nil).Want(http.StatusOK)
	bob.expect(changed(c2, "bob=accepted"))
	alice.drop()

	s.Advance(2 * grace)
	bob.nothing()
	for _, id := range []string{c1, c2} {
		if c := loadCall(t, s, id); c.State != calls.CallStarted {
			t.Fatalf("call %s: %s, want started", id, c.State)
		}
	}
}

// After a restart no stream is open: callers of pending calls get the same
// grace period, counted from the restart.
func TestCallerGraceAfterRestart(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	grace := s.Config.HeartbeatTimeout
	alice := listen(t, s, "alice", "")
	bob := listen(t, s, "bob", "")
	c1 := s.Client("alice").Invite(nil, "bob").CallID
	c2 := s.Client("alice").Invite(nil, "bob").CallID
	bob.expectAnyOrder(ev(calls.EventReceived, c1), changed(c1, "bob=received"), ev(calls.EventReceived, c2), changed(c2, "bob=received"))

	s.Advance(grace / 2)
	s.Restart()
	restartedAt := s.Now()
	bob.reconnect()
	for _, id := range []string{c1, c2} {
		if at := loadCall(t, s, id).CallerOfflineAt; at != restartedAt+grace.Milliseconds() {
			t.Fatalf("call %s: offline deadline %d, want restart+grace %d", id, at, restartedAt+grace.Milliseconds())
		}
	}

	s.Advance(grace - time.Millisecond)
	bob.nothing()
	s.Advance(time.Millisecond)
	bob.expectAnyOrder(ev(calls.EventCancelled, c1), changed(c1, "bob=cancelled"), ev(calls.EventCancelled, c2), changed(c2, "bob=cancelled"))
	_ = alice
}

// A caller that reconnects after the restart keeps its calls.
func TestCallerReconnectsAfterRestart(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock())
	grace := s.Config.HeartbeatTimeout
	alice := listen(t, s, "alice", "")
	bob := listen(t, s, "bob", "")
	c1 := s.Client("alice").Invite(nil, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))

	s.Restart()
	alice.reconnect()
	bob.reconnect()
	waitUntil(t, "the deadline to clear", func() bool { return loadCall(t, s, c1).CallerOfflineAt == 0 })
	s.Advance(2 * grace)
	bob.nothing()
	if c := loadCall(t, s, c1); c.State != calls.CallStarted {
		t.Fatalf("call after the caller reconnected: %s", c.State)
	}
}
