package calls

import (
	"reflect"
	"slices"
	"testing"
)

// receivedBy lists who got callInvitationReceived in a change, sorted.
func receivedBy(ch *Change) []string {
	ids := []string{}
	for _, e := range ch.Events {
		if e.Type == EventReceived {
			ids = append(ids, e.UserID)
		}
	}
	slices.Sort(ids)
	return ids
}

// busyPolicy on POST /calls: the busy set is the store's answer, the policy
// the request's; the transition decides who is invited and what the answer
// lists.
func TestNewCallBusyPolicy(t *testing.T) {
	small := testCfg
	small.MaxCallUsers = 3 // alice + two invitees
	cases := []struct {
		name      string
		mode      Mode
		policy    BusyPolicy
		invitees  []string
		busy      Busy
		cfg       Config
		invited   []string // got callInvitationReceived, sorted
		errUsers  []ErrorUser
		busyUsers []string
		ended     bool // the call ended at once
	}{
		{"default rings a busy invitee and lists it", ModeGeneral, "", []string{"bob", "carol"}, NewBusy([]string{"bob"}), testCfg,
			[]string{"bob", "carol"}, []ErrorUser{}, []string{"bob"}, false},
		{"ring rings a busy invitee and lists it", ModeAdvanced, BusyRing, []string{"bob", "carol"}, NewBusy([]string{"bob"}), testCfg,
			[]string{"bob", "carol"}, []ErrorUser{}, []string{"bob"}, false},
		{"nobody busy: busyUsers is empty, not nil", ModeGeneral, BusyRing, []string{"bob"}, nil, testCfg,
			[]string{"bob"}, []ErrorUser{}, []string{}, false},
		{"reject leaves a busy invitee out", ModeGeneral, BusyReject, []string{"bob", "carol"}, NewBusy([]string{"bob"}), testCfg,
			[]string{"carol"}, []ErrorUser{{UserID: "bob", Reason: ReasonBusy}}, []string{}, false},
		{"reject with nobody busy invites everyone", ModeAdvanced, BusyReject, []string{"bob", "carol"}, NewBusy([]string{"zoe"}), testCfg,
			[]string{"bob", "carol"}, []ErrorUser{}, []string{}, false},
		{"reject of every invitee ends a general call at once", ModeGeneral, BusyReject, []string{"bob"}, NewBusy([]string{"bob"}), testCfg,
			[]string{}, []ErrorUser{{UserID: "bob", Reason: ReasonBusy}}, []string{}, true},
		{"reject of every invitee leaves an advanced call to its caller", ModeAdvanced, BusyReject, []string{"bob"}, NewBusy([]string{"bob"}), testCfg,
			[]string{}, []ErrorUser{{UserID: "bob", Reason: ReasonBusy}}, []string{}, false},
		{"a rejected busy invitee takes no place in the call", ModeAdvanced, BusyReject, []string{"bob", "carol", "dave"}, NewBusy([]string{"bob"}), small,
			[]string{"carol", "dave"}, []ErrorUser{{UserID: "bob", Reason: ReasonBusy}}, []string{}, false},
		{"a busy invitee beyond the limit is call_full, not busy", ModeAdvanced, BusyRing, []string{"carol", "dave", "bob"}, NewBusy([]string{"bob"}), small,
			[]string{"carol", "dave"}, []ErrorUser{{UserID: "bob", Reason: ReasonCallFull}}, []string{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := InviteInput{Mode: tc.mode, Invitees: tc.invitees, BusyPolicy: tc.policy}
			ch, errUsers, err := NewCall("call0123456789abcdef", as("alice"), in, now0, tc.cfg, false, tc.busy)
			c := mustChange(t, ch, err)
			if got := receivedBy(ch); !slices.Equal(got, tc.invited) {
				t.Errorf("invited %v, want %v", got, tc.invited)
			}
			if !reflect.DeepEqual(errUsers, tc.errUsers) {
				t.Errorf("errorUserList %v, want %v", errUsers, tc.errUsers)
			}
			if !reflect.DeepEqual(ch.BusyUsers, tc.busyUsers) {
				t.Errorf("busyUsers %#v, want %#v", ch.BusyUsers, tc.busyUsers)
			}
			for _, e := range tc.errUsers {
				if c.User(e.UserID) != nil {
					t.Errorf("%s was refused (%s) but is in the call", e.UserID, e.Reason)
				}
			}
			if got := c.State == CallEnded; got != tc.ended {
				t.Errorf("call %s, want ended=%v", c.State, tc.ended)
			}
		})
	}
}

// busyPolicy on a calling invite (advanced mode): the same rules, after the
// call's own already_in_call check.
func TestCallingInviteBusyPolicy(t *testing.T) {
	cases := []struct {
		name      string
		policy    BusyPolicy
		invitees  []string
		busy      Busy
		invited   []string
		errUsers  []ErrorUser
		busyUsers []string
	}{
		{"ring", BusyRing, []string{"erin", "frank"}, NewBusy([]string{"erin"}),
			[]string{"erin", "frank"}, []ErrorUser{}, []string{"erin"}},
		{"default is ring", "", []string{"erin"}, NewBusy([]string{"erin"}),
			[]string{"erin"}, []ErrorUser{}, []string{"erin"}},
		{"reject", BusyReject, []string{"erin", "frank"}, NewBusy([]string{"erin"}),
			[]string{"frank"}, []ErrorUser{{UserID: "erin", Reason: ReasonBusy}}, []string{}},
		// The store answers for other calls only; a member pending in this
		// call is already_in_call whatever it says.
		{"already_in_call comes first", BusyReject, []string{"carol", "erin"}, NewBusy([]string{"carol", "erin"}),
			[]string{}, []ErrorUser{{UserID: "carol", Reason: ReasonAlreadyInCall}, {UserID: "erin", Reason: ReasonBusy}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tableCall(ModeAdvanced, StateAccepted)
			ch, errUsers, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: tc.invitees, BusyPolicy: tc.policy}, tableNow, testCfg, tc.busy)
			wantCode(t, err, "")
			if len(tc.invited) == 0 {
				if ch != nil {
					t.Fatalf("nobody invited, want no change; got events %v", ch.Events)
				}
			} else {
				mustChange(t, ch, err)
				if got := receivedBy(ch); !slices.Equal(got, tc.invited) {
					t.Errorf("invited %v, want %v", got, tc.invited)
				}
				if !reflect.DeepEqual(ch.BusyUsers, tc.busyUsers) {
					t.Errorf("busyUsers %#v, want %#v", ch.BusyUsers, tc.busyUsers)
				}
			}
			if !reflect.DeepEqual(errUsers, tc.errUsers) {
				t.Errorf("errorUserList %v, want %v", errUsers, tc.errUsers)
			}
		})
	}
}

// An unknown policy is a 400 on the busyPolicy field, before anything else
// happens.
func TestBusyPolicyValidation(t *testing.T) {
	_, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob"}, BusyPolicy: "hangup"}, now0, testCfg, false, nil)
	wantCode(t, err, CodeInvalidRequest)
	if f := err.(*Error).Fields; len(f) != 1 || f[0].Field != "busyPolicy" {
		t.Errorf("fields %v, want busyPolicy", f)
	}
	_, _, err = CallingInvite(tableCall(ModeAdvanced, StateAccepted), as("bob"), CallingInviteInput{Invitees: []string{"erin"}, BusyPolicy: "Ring"}, tableNow, testCfg, nil)
	wantCode(t, err, CodeInvalidRequest)
}
