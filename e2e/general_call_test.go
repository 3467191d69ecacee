package e2e

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// A caller invites one user in general mode; the invitee accepts and the
// call ends because nobody is pending any more.
func TestGeneralCallAccept(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob, carol := s.Client("alice"), s.Client("bob"), s.Client("carol")

		res := alice.Invite(map[string]any{"extendedData": "video", "timeout": 30}, "bob")
		if len(res.CallID) < 16 || res.Timeout != 30 || len(res.ErrorUserList) != 0 {
			t.Fatalf("invite answer %+v", res)
		}
		c := res.Call
		if c.Caller != "alice" || c.Mode != calls.ModeGeneral || c.State != calls.CallStarted || c.EndTime != 0 || c.ExtendedData != "video" {
			t.Fatalf("call %+v", c)
		}
		if testkit.UserState(c, "alice") != calls.StateAccepted || testkit.UserState(c, "bob") != calls.StateInviting {
			t.Fatalf("user states %+v", c.CallUserList)
		}

		// Both members see it; an outsider does not learn it exists.
		if got := bob.GetCall(res.CallID); got.CallID != res.CallID {
			t.Fatalf("bob sees %+v", got)
		}
		carol.Get("/calls/"+res.CallID).WantProblem(http.StatusNotFound, "call_not_found")

		s.Advance(time.Second)
		bob.Action(res.CallID, "accept", map[string]any{"extendedData": "ok"}).Want(http.StatusOK)
		got := alice.GetCall(res.CallID)
		if got.State != calls.CallEnded || got.EndTime != s.Now() {
			t.Fatalf("after accept: state %s endTime %d, want ended at %d", got.State, got.EndTime, s.Now())
		}
		for _, u := range got.CallUserList {
			if u.UserID == "bob" && (u.State != calls.StateAccepted || u.ExtendedData != "ok" || u.UpdateTime != s.Now() || u.Inviter != "alice") {
				t.Fatalf("bob after accept %+v", u)
			}
		}

		// The events were recorded with their recipients, in the same commits.
		wantTypes(t, s.Log("alice"), res.CallID, calls.EventCreated, calls.EventUserStateChanged)
		wantTypes(t, s.Log("bob"), res.CallID, calls.EventReceived, calls.EventUserStateChanged)
		if log := s.Log("carol"); len(log) != 0 {
			t.Fatalf("carol got events %+v", log)
		}
		rcv := s.Log("bob")[0].Fields
		for k, v := range map[string]any{"callID": res.CallID, "caller": "alice", "inviter": "alice", "mode": "general", "timeout": 30.0, "extendedData": "video"} {
			if rcv[k] != v {
				t.Errorf("callInvitationReceived %s = %v, want %v", k, rcv[k], v)
			}
		}
		changed := s.Log("alice")[1].Fields["callUserList"].([]any)
		if len(changed) != 1 || changed[0].(map[string]any)["userID"] != "bob" || changed[0].(map[string]any)["state"] != "accepted" {
			t.Fatalf("state change %v", changed)
		}
	})
}

// With two invitees the call goes on until the second one answers too.
func TestGeneralCallEndsWhenNobodyPending(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob, carol := s.Client("alice"), s.Client("bob"), s.Client("carol")
		id := alice.Invite(nil, "bob", "carol").CallID

		bob.Action(id, "reject", map[string]any{"extendedData": "busy"}).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallStarted || testkit.UserState(c, "bob") != calls.StateRejected {
			t.Fatalf("after one reject: %+v", c)
		}
		bob.Action(id, "accept", nil).WantProblem(http.StatusConflict, "invalid_state")
		carol.Action(id, "accept", nil).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallEnded {
			t.Fatalf("after the last answer: %+v", c)
		}
		// carol was told bob rejected (she was pending) and of her own accept.
		wantTypes(t, s.Log("carol"), id, calls.EventReceived, calls.EventUserStateChanged, calls.EventUserStateChanged)
		carol.Action(id, "reject", nil).WantProblem(http.StatusConflict, "call_ended")
	})
}

// The caller cancels; the invitee is told and the call ends.
func TestGeneralCallCancel(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob := s.Client("alice"), s.Client("bob")
		id := alice.Invite(nil, "bob", "carol").CallID

		bob.Action(id, "cancel", map[string]any{"invitees": []string{"carol"}}).WantProblem(http.StatusForbidden, "forbidden")
		var res calls.CancelResult
		alice.Action(id, "cancel", map[string]any{"invitees": []string{"bob", "zed"}, "extendedData": "sorry"}).Want(http.StatusOK).JSON(&res)
		if res.CallID != id || !slices.Equal(res.ErrorInvitees, []string{"zed"}) {
			t.Fatalf("cancel answer %+v", res)
		}
		if c := alice.GetCall(id); c.State != calls.CallStarted || testkit.UserState(c, "bob") != calls.StateCancelled {
			t.Fatalf("after cancelling bob: %+v", c)
		}
		bob.Action(id, "accept", nil).WantProblem(http.StatusConflict, "invalid_state")
		// An empty list cancels every pending invitee I invited.
		alice.Action(id, "cancel", map[string]any{}).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallEnded || testkit.UserState(c, "carol") != calls.StateCancelled {
			t.Fatalf("after cancelling all: %+v", c)
		}
		cancelled := s.Log("bob")[1]
		if cancelled.Type != calls.EventCancelled || cancelled.Fields["inviter"] != "alice" || cancelled.Fields["extendedData"] != "sorry" {
			t.Fatalf("cancel event %+v", cancelled)
		}
	})
}

// An unanswered invitation times out after `timeout` seconds.
func TestGeneralCallTimeout(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := s.Client("alice")
		id := alice.Invite(map[string]any{"timeout": 10}, "bob").CallID

		s.Advance(9 * time.Second)
		if c := alice.GetCall(id); testkit.UserState(c, "bob") != calls.StateInviting {
			t.Fatalf("timed out early: %+v", c)
		}
		s.Advance(time.Second)
		c := waitCall(t, alice, id, func(c testkit.Call) bool { return c.State == calls.CallEnded })
		if testkit.UserState(c, "bob") != calls.StateTimeout {
			t.Fatalf("after timeout: %+v", c)
		}
		wantTypes(t, s.Log("bob"), id, calls.EventReceived, calls.EventTimeout, calls.EventUserStateChanged)
		wantTypes(t, s.Log("alice"), id, calls.EventCreated, calls.EventUserStateChanged)
	})
}

// An invitation whose timeout has passed is not accepted, even when the
// accept comes before the scheduler has fired the timeout (it lags when
// many fall due at once, or after a restart): the accept fires it first,
// and gets 409. Each timeout is told once, whoever fired it.
func TestNoAcceptAfterTheTimeout(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob := s.Client("alice"), s.Client("bob")
		const n = 50
		ids := make([]string, n)
		for i := range ids {
			ids[i] = alice.Invite(map[string]any{"timeout": 1}, "bob").CallID
		}
		s.Advance(2 * time.Second) // every one due; the scheduler starts on them
		answers := make([]*testkit.Response, n)
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Go(func() { answers[i] = bob.Action(id, "accept", nil) })
		}
		wg.Wait()
		for i, id := range ids {
			answers[i].WantProblemIn(http.StatusConflict, "invalid_state", "call_ended")
			c := waitCall(t, alice, id, func(c testkit.Call) bool { return c.State == calls.CallEnded })
			if st := testkit.UserState(c, "bob"); st != calls.StateTimeout {
				t.Fatalf("call %s: bob %s after an accept past his timeout, want timeout", id, st)
			}
		}
		log := s.Log("bob")
		for _, id := range ids {
			if got := testkit.Types(log, id); !slices.Equal(got, []calls.EventType{calls.EventReceived, calls.EventTimeout, calls.EventUserStateChanged}) {
				t.Fatalf("bob's events of %s: %v, want the invitation, one timeout and its state change", id, got)
			}
		}
	})
}

// waitCall waits until the call satisfies cond: timers fire on their own
// goroutine, so the test waits with a deadline rather than sleeping.
func waitCall(t *testing.T, c *testkit.Client, id string, cond func(testkit.Call) bool) testkit.Call {
	t.Helper()
	var got testkit.Call
	wait.For(t, eventWait, "call "+id+" to reach the expected state", func() bool {
		got = c.GetCall(id)
		return cond(got)
	})
	return got
}

func wantTypes(t *testing.T, log []testkit.LoggedEvent, callID string, want ...calls.EventType) {
	t.Helper()
	if got := testkit.Types(log, callID); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}
