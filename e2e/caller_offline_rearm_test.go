package e2e

import (
	"net/http"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// The caller-offline rule, once it fired and the call went on with a user
// who joined uninvited, stands while the caller stays away: armed again
// a grace later at each firing (cancelling invitations made meanwhile),
// kept by a restart, cleared when the caller comes back, armed from the
// close when she leaves again.
func TestCallerOfflineRuleStandsWhileTheCallerIsAway(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		grace := s.Config.HeartbeatTimeout.Milliseconds()
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.missed", "call.ended", "call.user_state_changed")
		alice := listen(t, s, "alice", "")
		bob := listen(t, s, "bob", "")
		dave := listen(t, s, "dave", "")
		carol := listen(t, s, "carol", "")
		id := s.Client("alice").Invite(map[string]any{"mode": "advanced", "timeout": 600}, "bob").CallID
		bob.expect(ev(calls.EventReceived, id), changed(id, "bob=received"))
		s.Client("dave").Action(id, "join", nil).Want(http.StatusOK)
		bob.expect(changed(id, "dave=accepted"))
		dave.expect(changed(id, "dave=accepted"))
		alice.drop()
		offlineEverywhere(t, s, "alice")
		at := offlineArmed(t, s, id)
		s.Advance(time.Duration(at-s.Now()) * time.Millisecond)
		bob.expect(ev(calls.EventCancelled, id), changed(id, "bob=cancelled"))
		dave.expect(changed(id, "bob=cancelled"))
		at2 := loadCall(t, s, id).CallerOfflineAt
		if at2 != at+grace {
			t.Fatalf("re-armed at %d, want %d", at2, at+grace)
		}

		// dave invites carol meanwhile: the next firing cancels her, and tells
		// her it was dave's invitation.
		s.Client("dave").Action(id, "invite", map[string]any{"invitees": []string{"carol"}}).Want(http.StatusOK)
		e := carol.expect(ev(calls.EventReceived, id), changed(id, "carol=inviting"), changed(id, "carol=received"))[0].Fields()
		if e["inviter"] != "dave" {
			t.Fatalf("carol's callInvitationReceived names inviter %v, want dave", e["inviter"])
		}
		dave.expect(changed(id, "carol=inviting"), changed(id, "carol=received"))
		s.Advance(time.Duration(at2-s.Now()) * time.Millisecond)
		e = carol.expect(ev(calls.EventCancelled, id), changed(id, "carol=cancelled"))[0].Fields()
		if e["inviter"] != "dave" {
			t.Fatalf("carol's callInvitationCancelled names inviter %v, want dave (who invited her)", e["inviter"])
		}
		dave.expect(changed(id, "carol=cancelled"))
		at3 := loadCall(t, s, id).CallerOfflineAt
		if at3 != at2+grace {
			t.Fatalf("re-armed at %d, want %d", at3, at2+grace)
		}

		// Nothing pending: the firings emit nothing, and advance by one grace each.
		before := len(s.Log("dave")) + len(s.Log("alice")) + len(s.Log("bob")) + len(s.Log("carol"))
		missedCalls(t, s, rcv, wh, id) // everything so far delivered
		hooksBefore := len(rcv.Deliveries())
		for i := 0; i < 3; i++ {
			next := loadCall(t, s, id).CallerOfflineAt
			s.Advance(time.Duration(next-s.Now()) * time.Millisecond)
			wait.For(t, eventWait, "the re-arm", func() bool { return loadCall(t, s, id).CallerOfflineAt == next+grace })
		}
		dave.nothing()
		if after := len(s.Log("dave")) + len(s.Log("alice")) + len(s.Log("bob")) + len(s.Log("carol")); after != before {
			t.Fatalf("empty firings logged %d events", after-before)
		}
		m := missedCalls(t, s, rcv, wh, id)
		t.Logf("missed: %+v", m)
		if n := len(rcv.Deliveries()); n != hooksBefore {
			t.Fatalf("empty firings sent %d webhooks", n-hooksBefore)
		}

		// Restart keeps the re-armed deadline. erin is connected at the
		// stop: her call is the one the start arms, the sign that the
		// start-up arming has run.
		listen(t, s, "erin", "")
		marker := s.Client("erin").Invite(map[string]any{"mode": "advanced", "timeout": 600}, "frank").CallID
		s.Client("frank").Action(marker, "reject", nil).Want(http.StatusOK)
		armed := loadCall(t, s, id).CallerOfflineAt
		s.Restart()
		dave.reconnect()
		wait.For(t, eventWait, "the start-up arming of the call of a caller connected at the stop", func() bool {
			return loadCall(t, s, marker).CallerOfflineAt != 0
		})
		if got := loadCall(t, s, id).CallerOfflineAt; got != armed {
			t.Fatalf("after a restart the deadline is %d, want %d kept", got, armed)
		}

		// The caller comes back: cleared; leaves: armed a grace from then.
		alice = listen(t, s, "alice", "")
		wait.For(t, eventWait, "the grace to clear", func() bool { return loadCall(t, s, id).CallerOfflineAt == 0 })
		s.Advance(3 * time.Duration(grace) * time.Millisecond)
		if c := loadCall(t, s, id); c.State != calls.CallStarted {
			t.Fatalf("caller back, call %s", c.State)
		}
		left := s.Now()
		alice.drop()
		offlineEverywhere(t, s, "alice")
		if got := offlineArmed(t, s, id); got != left+grace {
			t.Fatalf("armed at %d, want %d", got, left+grace)
		}

		// dave quits: when does the call end?
		s.Advance(time.Duration(grace) * time.Millisecond) // fires: goes on with dave, re-armed
		wait.For(t, eventWait, "the re-arm", func() bool { return loadCall(t, s, id).CallerOfflineAt == left+2*grace })
		quitAt := s.Now()
		s.Client("dave").Action(id, "quit", nil).Want(http.StatusOK)
		c := loadCall(t, s, id)
		t.Logf("after dave's quit (caller away %d ms > grace %d): state %s, CallerOfflineAt-now=%d", quitAt-left, grace, c.State, c.CallerOfflineAt-quitAt)
	})
}
