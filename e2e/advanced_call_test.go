package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/testkit"
)

// An advanced call: members invite more users, an outsider joins, members
// quit, and one member ends the call for everyone.
func TestAdvancedCall(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob, carol, dave, erin := s.Client("alice"), s.Client("bob"), s.Client("carol"), s.Client("dave"), s.Client("erin")

		id := alice.Invite(map[string]any{"mode": "advanced", "extendedData": "room-1"}, "bob").CallID
		bob.Action(id, "accept", nil).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallStarted {
			t.Fatalf("advanced call ended when its invitee accepted: %+v", c)
		}

		// bob, in the call, invites carol and (again) alice.
		var inv calls.CallingInviteResult
		bob.Action(id, "invite", map[string]any{"invitees": []string{"carol", "alice"}}).Want(http.StatusOK).JSON(&inv)
		if len(inv.ErrorUserList) != 1 || inv.ErrorUserList[0] != (calls.ErrorUser{UserID: "alice", Reason: "already_in_call"}) {
			t.Fatalf("calling invite errors %+v", inv.ErrorUserList)
		}
		rcv := s.Log("carol")[0]
		if rcv.Type != calls.EventReceived || rcv.Fields["inviter"] != "bob" || rcv.Fields["caller"] != "alice" {
			t.Fatalf("carol's invitation %+v", rcv)
		}
		carol.Action(id, "accept", nil).Want(http.StatusOK)

		// dave was never invited but holds the callID: he may join.
		s.Advance(time.Second)
		var joined calls.JoinResult
		dave.Action(id, "join", map[string]any{"extendedData": "hi"}).Want(http.StatusOK).JSON(&joined)
		if joined.CallID != id || joined.JoinTime != s.Now() || joined.ExtendedData != "room-1" || len(joined.CallUserList) != 4 {
			t.Fatalf("join answer %+v", joined)
		}
		dave.Action(id, "join", nil).WantProblem(http.StatusConflict, "already_in_call")

		var quit calls.QuitResult
		bob.Action(id, "quit", map[string]any{"extendedData": "bye"}).Want(http.StatusOK).JSON(&quit)
		if quit.QuitTime != s.Now() || quit.AcceptTime == 0 || quit.CreateTime == 0 {
			t.Fatalf("quit answer %+v", quit)
		}
		bob.Action(id, "quit", nil).WantProblem(http.StatusConflict, "invalid_state")

		// carol invites erin, who has not answered when dave ends the call.
		carol.Action(id, "invite", map[string]any{"invitees": []string{"erin"}}).Want(http.StatusOK)
		var end calls.EndResult
		dave.Action(id, "end", map[string]any{"extendedData": "done"}).Want(http.StatusOK).JSON(&end)
		c := alice.GetCall(id)
		if c.State != calls.CallEnded || c.EndTime != end.EndTime {
			t.Fatalf("after end: %+v / %+v", c, end)
		}
		want := map[string]calls.UserState{"alice": "accepted", "bob": "quit", "carol": "accepted", "dave": "accepted", "erin": "inviting"}
		for u, st := range want {
			if got := testkit.UserState(c, u); got != st {
				t.Errorf("%s is %s after end, want %s (states stay as they are)", u, got, st)
			}
		}
		// callInvitationEnded goes to the users pending or in the call, not to bob.
		for _, u := range []string{"alice", "carol", "dave", "erin"} {
			log := s.Log(u)
			last := log[len(log)-1]
			if last.Type != calls.EventEnded || last.Fields["operatedUserID"] != "dave" || last.Fields["extendedData"] != "done" {
				t.Errorf("%s's last event %+v, want callInvitationEnded", u, last)
			}
		}
		if log := s.Log("bob"); log[len(log)-1].Type == calls.EventEnded {
			t.Errorf("bob, who quit, was told the call ended")
		}
		erin.Action(id, "accept", nil).WantProblem(http.StatusConflict, "call_ended")
		// A timeout that would have fired after the end does nothing.
		s.Advance(2 * time.Minute)
		if c := alice.GetCall(id); testkit.UserState(c, "erin") != calls.StateInviting {
			t.Fatalf("erin's timer fired after the call ended: %+v", c)
		}
	})
}

// An advanced call ends by itself when nobody is left in it or invited.
func TestAdvancedCallEndsWhenEmpty(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice, bob := s.Client("alice"), s.Client("bob")
		id := alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
		bob.Action(id, "reject", nil).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallStarted {
			t.Fatalf("ended with the caller still in: %+v", c)
		}
		alice.Action(id, "quit", nil).Want(http.StatusOK)
		if c := alice.GetCall(id); c.State != calls.CallEnded {
			t.Fatalf("not ended when empty: %+v", c)
		}
		alice.Action(id, "join", nil).WantProblem(http.StatusConflict, "call_ended")
	})
}

// At most MaxCallUsers users are ever in one call.
func TestAdvancedCallFull(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithConfig(func(c *app.Config) { c.MaxCallUsers = 3 }))
		alice, bob := s.Client("alice"), s.Client("bob")
		res := alice.Invite(map[string]any{"mode": "advanced"}, "bob", "carol", "dave")
		if len(res.ErrorUserList) != 1 || res.ErrorUserList[0] != (calls.ErrorUser{UserID: "dave", Reason: "call_full"}) {
			t.Fatalf("errorUserList %+v", res.ErrorUserList)
		}
		bob.Action(res.CallID, "accept", nil).Want(http.StatusOK)
		var inv calls.CallingInviteResult
		bob.Action(res.CallID, "invite", map[string]any{"invitees": []string{"erin"}}).Want(http.StatusOK).JSON(&inv)
		if len(inv.ErrorUserList) != 1 || inv.ErrorUserList[0].Reason != "call_full" {
			t.Fatalf("calling invite into a full call: %+v", inv)
		}
		// Not in the call and may not join it: the answer for an unknown
		// call, to the byte.
		full := s.Client("frank").Action(res.CallID, "join", nil).WantProblem(http.StatusNotFound, "call_not_found")
		none := s.Client("frank").Action("doesnotexist0000000000", "join", nil).WantProblem(http.StatusNotFound, "call_not_found")
		if full.Detail != none.Detail || full.Title != none.Title {
			t.Errorf("a full call's 404 %+v differs from an unknown call's %+v", full, none)
		}
	})
}

// A user may be in at most CALLSIG_MAX_STARTED_CALLS_PER_USER started
// calls and still create an advanced one. A caller with no stream whose advanced
// calls' invitees all time out stays accepted in each for good (the call
// ends only by end, or when nobody is left), so a user creating them in a
// loop grew the calls past every retention (a review: 349 such calls in
// 5 s, none pruned). Ending one makes room; others are not held back.
func TestStartedCallsPerUserAreBounded(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.MaxStartedCalls = 3 }))
		mallory := s.Client("mallory")
		var ids []string
		for i := range 3 {
			ids = append(ids, mallory.Invite(map[string]any{"mode": "advanced", "timeout": 1}, fmt.Sprintf("ghost%d", i)).CallID)
		}
		s.Advance(2 * time.Second) // every invitee times out: mallory alone, accepted, in each
		for i, id := range ids {
			c := waitCall(t, mallory, id, func(c testkit.Call) bool {
				return testkit.UserState(c, fmt.Sprintf("ghost%d", i)) == calls.StateTimeout
			})
			if c.State != calls.CallStarted {
				t.Fatalf("an advanced call whose invitees timed out: %+v, want it started (its caller is in it)", c)
			}
		}
		p := mallory.Post("/calls", map[string]any{"invitees": []string{"ghost9"}, "mode": "advanced"}).
			WantProblem(http.StatusConflict, "invalid_state")
		if !strings.Contains(p.Detail, "3 started calls") {
			t.Errorf("detail %q, want it to say how many", p.Detail)
		}
		// Another user is not held back, nor are mallory's invitations.
		bob := s.Client("bob")
		bobs := bob.Invite(nil, "mallory").CallID
		mallory.Action(bobs, "reject", nil).Want(http.StatusOK)
		// Ending one makes room for one.
		mallory.Action(ids[0], "end", nil).Want(http.StatusOK)
		mallory.Invite(map[string]any{"mode": "advanced"}, "ghost10")
		mallory.Post("/calls", map[string]any{"invitees": []string{"ghost11"}, "mode": "advanced"}).WantProblem(http.StatusConflict, "invalid_state")
		// A general call too: each pending one is rewritten when its
		// caller's stream opens or closes.
		mallory.Post("/calls", map[string]any{"invitees": []string{"ghost12"}}).WantProblem(http.StatusConflict, "invalid_state")
	})
}

// Pending general calls count against CALLSIG_MAX_STARTED_CALLS_PER_USER:
// within a 600-s timeout a caller at the rate limit held some 30,000, and
// every open and close of its stream rewrote each of them on the writer.
// Once one ends (here it times out), there is room for another.
func TestPendingGeneralCallsAreBounded(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.MaxStartedCalls = 3 }))
		mallory := s.Client("mallory")
		st := s.Stream("mallory", "", "") // tracked: its presence changes rewrite them
		defer st.Close()
		first := mallory.Invite(map[string]any{"timeout": 1}, "ghost0").CallID
		mallory.Invite(map[string]any{"timeout": 60}, "ghost1")
		mallory.Invite(map[string]any{"timeout": 60}, "ghost2")
		p := mallory.Post("/calls", map[string]any{"invitees": []string{"ghost3"}}).WantProblem(http.StatusConflict, "invalid_state")
		if !strings.Contains(p.Detail, "3 started calls") {
			t.Errorf("detail %q, want it to say how many", p.Detail)
		}
		s.Advance(2 * time.Second)
		waitCall(t, mallory, first, func(c testkit.Call) bool { return c.State == calls.CallEnded })
		mallory.Invite(nil, "ghost3")
	})
}

// A general call refuses the advanced-mode actions.
func TestGeneralCallWrongMode(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, backend)
		alice := s.Client("alice")
		id := alice.Invite(nil, "bob").CallID
		for _, action := range []string{"invite", "join", "quit", "end"} {
			body := map[string]any{}
			if action == "invite" {
				body["invitees"] = []string{"carol"}
			}
			alice.Action(id, action, body).WantProblem(http.StatusConflict, "wrong_mode")
		}
		// An outsider cannot learn that a general call exists.
		s.Client("mallory").Action(id, "join", nil).WantProblem(http.StatusNotFound, "call_not_found")
	})
}
