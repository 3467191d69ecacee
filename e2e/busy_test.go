package e2e

import (
	"net/http"
	"reflect"
	"slices"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
)

// busyInvite starts a call from caller with busyPolicy (""=absent) and
// checks the answer's errorUserList and busyUsers.
func busyInvite(t *testing.T, s *testkit.Server, caller string, mode calls.Mode, policy string, invitees []string, wantErr []calls.ErrorUser, wantBusy []string) calls.InviteResult {
	t.Helper()
	body := map[string]any{"mode": mode}
	if policy != "" {
		body["busyPolicy"] = policy
	}
	res := s.Client(caller).Invite(body, invitees...)
	checkBusyAnswer(t, caller+" invites "+string(mode)+" "+policy, res.ErrorUserList, res.BusyUsers, wantErr, wantBusy)
	for _, e := range wantErr {
		if testkit.UserState(res.Call, e.UserID) != "" {
			t.Fatalf("%s refused (%s) but in the call: %+v", e.UserID, e.Reason, res.Call.CallUserList)
		}
	}
	for _, id := range invitees {
		refused := slices.ContainsFunc(wantErr, func(e calls.ErrorUser) bool { return e.UserID == id })
		if !refused && testkit.UserState(res.Call, id) != calls.StateInviting {
			t.Fatalf("%s not invited: %+v", id, res.Call.CallUserList)
		}
	}
	return res
}

// callingInvite posts a calling invite and checks the answer the same way.
func callingInvite(t *testing.T, s *testkit.Server, member, callID, policy string, invitees []string, wantErr []calls.ErrorUser, wantBusy []string) {
	t.Helper()
	body := map[string]any{"invitees": invitees}
	if policy != "" {
		body["busyPolicy"] = policy
	}
	var res calls.CallingInviteResult
	s.Client(member).Action(callID, "invite", body).Want(http.StatusOK).JSON(&res)
	checkBusyAnswer(t, member+" calling-invites "+policy, res.ErrorUserList, res.BusyUsers, wantErr, wantBusy)
}

func checkBusyAnswer(t *testing.T, what string, errUsers []calls.ErrorUser, busy []string, wantErr []calls.ErrorUser, wantBusy []string) {
	t.Helper()
	if wantErr == nil {
		wantErr = []calls.ErrorUser{}
	}
	if wantBusy == nil {
		wantBusy = []string{}
	}
	// busyUsers is always present: an absent field would decode to nil.
	if !reflect.DeepEqual(errUsers, wantErr) || !reflect.DeepEqual(busy, wantBusy) {
		t.Fatalf("%s: errorUserList %v busyUsers %#v, want %v and %#v", what, errUsers, busy, wantErr, wantBusy)
	}
}

var busyBob = []calls.ErrorUser{{UserID: "bob", Reason: calls.ReasonBusy}}

// A user accepted in an advanced call (from any device) is busy for every
// other call, general or advanced, until they leave it: ring invites them
// and says so, reject leaves them out. The call they are in does not count.
func TestBusyInAnAdvancedCall(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		bobStream := listen(t, s, "bob", "phone")

		// bob accepts alice's advanced call on his phone: busy.
		room := s.Client("alice").Invite(map[string]any{"mode": "advanced"}, "bob").CallID
		bobStream.expect(ev(calls.EventReceived, room), changed(room, "bob=received"))
		s.Client("bob").OnDevice("phone").Action(room, "accept", nil).Want(http.StatusOK)
		bobStream.expect(changed(room, "bob=accepted"))

		for _, mode := range []calls.Mode{calls.ModeGeneral, calls.ModeAdvanced} {
			// Ring (the default, and spelled out): bob is invited as usual and
			// his phone rings; the answer says he is on another call.
			for _, policy := range []string{"", "ring"} {
				c := busyInvite(t, s, "carol", mode, policy, []string{"bob", "dave"}, nil, []string{"bob"}).CallID
				bobStream.expect(ev(calls.EventReceived, c), changed(c, "bob=received"))
			}
			// Reject: bob is not invited; dave is. That bob hears nothing of it
			// shows in the next expect: his next event is of a later call.
			busyInvite(t, s, "carol", mode, "reject", []string{"bob", "dave"}, busyBob, nil)
		}

		// A general call whose only invitee is refused ends at once; an
		// advanced one stays with its caller.
		if c := busyInvite(t, s, "carol", calls.ModeGeneral, "reject", []string{"bob"}, busyBob, nil).Call; c.State != calls.CallEnded {
			t.Fatalf("general call with every invitee refused: %s", c.State)
		}

		// Calling invite, in both policies, from a third call's member.
		other := s.Client("erin").Invite(map[string]any{"mode": "advanced"}, "frank").CallID
		s.Client("frank").Action(other, "accept", nil).Want(http.StatusOK)
		callingInvite(t, s, "frank", other, "reject", []string{"bob", "gina"}, busyBob, nil)
		callingInvite(t, s, "frank", other, "", []string{"bob"}, nil, []string{"bob"})
		bobStream.expect(ev(calls.EventReceived, other), changed(other, "bob=inviting"), changed(other, "bob=received"))

		// In his own call bob is already_in_call, not busy; and the caller of
		// a started call is accepted in it, so busy too.
		callingInvite(t, s, "alice", room, "reject", []string{"bob"}, []calls.ErrorUser{{UserID: "bob", Reason: calls.ReasonAlreadyInCall}}, nil)
		busyInvite(t, s, "henry", calls.ModeGeneral, "reject", []string{"alice", "ivan"}, []calls.ErrorUser{{UserID: "alice", Reason: calls.ReasonBusy}}, nil)

		// Once bob quits he is free again.
		s.Client("bob").OnDevice("phone").Action(room, "quit", nil).Want(http.StatusOK)
		busyInvite(t, s, "carol", calls.ModeAdvanced, "reject", []string{"bob"}, nil, nil)
	})
}

// In general mode a user is busy while accepted in a call that is still
// started, i.e. while another invitee of it is pending; when the call ends
// (here by the last reject) everyone in it is free.
func TestBusyInAGeneralCall(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		c := s.Client("alice").Invite(nil, "bob", "carol").CallID
		s.Client("bob").OnDevice("tablet").Action(c, "accept", nil).Want(http.StatusOK)

		busyInvite(t, s, "dave", calls.ModeGeneral, "reject", []string{"bob", "erin"}, busyBob, nil)
		busyInvite(t, s, "dave", calls.ModeAdvanced, "ring", []string{"bob"}, nil, []string{"bob"})
		adv := s.Client("frank").Invite(map[string]any{"mode": "advanced"}, "gina").CallID
		s.Client("gina").Action(adv, "accept", nil).Want(http.StatusOK)
		callingInvite(t, s, "gina", adv, "reject", []string{"bob"}, busyBob, nil)

		// carol, still pending, is not busy.
		busyInvite(t, s, "dave", calls.ModeGeneral, "reject", []string{"carol"}, nil, nil)

		s.Client("carol").Action(c, "reject", nil).Want(http.StatusOK)
		if got := s.Client("alice").GetCall(c); got.State != calls.CallEnded {
			t.Fatalf("general call after the last answer: %s", got.State)
		}
		busyInvite(t, s, "dave", calls.ModeGeneral, "reject", []string{"bob"}, nil, nil)
		callingInvite(t, s, "gina", adv, "reject", []string{"alice"}, nil, nil)
	})
}

// An unknown busyPolicy is refused before anything is done.
func TestBusyPolicyInvalid(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, backend)
		s.Client("alice").Post("/calls", map[string]any{"invitees": []string{"bob"}, "busyPolicy": "hangup"}).WantProblem(http.StatusBadRequest, "invalid_request")
		if log := s.Log("bob"); len(log) != 0 {
			t.Fatalf("bob got %d events from a refused call", len(log))
		}
	})
}
