package calls

import (
	"slices"
	"testing"
)

// The contract's caller-offline rule fires only while "no invitee has
// accepted", and a user who joined uninvited is no invitee: his join keeps
// the rule on, the rule cancels the pending invitations, and the call goes
// on with him; it ends only "if no one but the caller is left in accepted".
// An invitee who is in, however he got there (accept, a join instead of an
// accept, an accepted invitation after an uninvited join), switches the
// rule off and clears an armed grace. Each case starts alice's advanced
// call to bob and carol with alice tracked, arms her grace, then plays its
// steps within the grace.
func TestCallerOfflineCountsOnlyInvitees(t *testing.T) {
	grace := testCfg.HeartbeatTimeout
	offAt := now0 + 1000
	due := offAt + grace.Milliseconds()
	type step func(c *Call, now int64) (*Change, error)
	join := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Join(c, as(id), "", now, testCfg) }
	}
	quit := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Quit(c, as(id), LeaveInput{}, now) }
	}
	answer := func(id string, accept bool) step {
		return func(c *Call, now int64) (*Change, error) { return Answer(c, as(id), accept, "", now) }
	}
	invite := func(by, id string) step {
		return func(c *Call, now int64) (*Change, error) {
			ch, errUsers, err := CallingInvite(c, as(by), CallingInviteInput{Invitees: []string{id}}, now, testCfg, nil)
			if err == nil && len(errUsers) != 0 {
				t.Fatalf("invite %s: errorUserList %v", id, errUsers)
			}
			return ch, err
		}
	}
	cases := []struct {
		name  string
		steps []step
		// applies: the rule still watches the call after the steps, so the
		// grace stays armed and fires at due.
		applies bool
		// after the grace: the states and whether the call goes on.
		want      map[string]UserState
		cancelled []string
		goesOn    bool
	}{
		{name: "nobody answered", applies: true,
			want:      map[string]UserState{"alice": StateAccepted, "bob": StateCancelled, "carol": StateCancelled},
			cancelled: []string{"bob", "carol"}},
		{name: "a user joined uninvited", steps: []step{join("dave")}, applies: true,
			want:      map[string]UserState{"alice": StateAccepted, "bob": StateCancelled, "carol": StateCancelled, "dave": StateAccepted},
			cancelled: []string{"bob", "carol"}, goesOn: true},
		{name: "a user joined uninvited, the invitees rejected", steps: []step{join("dave"), answer("bob", false), answer("carol", false)}, applies: true,
			want:   map[string]UserState{"alice": StateAccepted, "bob": StateRejected, "carol": StateRejected, "dave": StateAccepted},
			goesOn: true},
		{name: "a user joined uninvited and quit", steps: []step{join("dave"), quit("dave")}, applies: true,
			want:      map[string]UserState{"alice": StateAccepted, "bob": StateCancelled, "carol": StateCancelled, "dave": StateQuit},
			cancelled: []string{"bob", "carol"}},
		{name: "an invitee accepted", steps: []step{answer("bob", true)}},
		{name: "an invitee accepted and quit", steps: []step{answer("bob", true), quit("bob")}},
		{name: "an invitee joined instead of accepting", steps: []step{join("bob")}},
		{name: "an invitee rejected, then joined", steps: []step{answer("bob", false), join("bob")}},
		{name: "an uninvited joiner quit and was invited, no answer yet", steps: []step{join("dave"), quit("dave"), invite("alice", "dave")}, applies: true,
			want:      map[string]UserState{"alice": StateAccepted, "bob": StateCancelled, "carol": StateCancelled, "dave": StateCancelled},
			cancelled: []string{"bob", "carol", "dave"}},
		{name: "an uninvited joiner quit, was invited and accepted", steps: []step{join("dave"), quit("dave"), invite("alice", "dave"), answer("dave", true)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol"}}, now0, testCfg, true, nil)
			c := mustChange(t, ch, err)
			c = mustChange(t, CallerPresence(c, false, offAt, grace), nil)
			for i, s := range tc.steps {
				ch, err := s(c, offAt+int64(i+1)*100)
				c = mustChange(t, ch, err)
			}
			if got := CallerOfflineApplies(c); got != tc.applies {
				t.Fatalf("CallerOfflineApplies = %v, want %v", got, tc.applies)
			}
			if armed := c.CallerOfflineAt != 0; armed != tc.applies {
				t.Fatalf("callerOfflineAt %d after the steps, want it armed: %v", c.CallerOfflineAt, tc.applies)
			}
			ch = Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: due}, due)
			if !tc.applies {
				if ch != nil && (len(ch.Events) != 0 || len(ch.Hooks) != 0 || ch.Call.State != CallStarted) {
					t.Fatalf("the rule fired after an invitee accepted: events %v hooks %v state %s", ch.Events, hookTypes(ch), ch.Call.State)
				}
				return
			}
			after := mustChange(t, ch, nil)
			wantStates(t, after, tc.want)
			if got := recipientsOf(eventsOf(ch, EventCancelled)); !slices.Equal(got, tc.cancelled) {
				t.Errorf("callInvitationCancelled sent to %v, want %v", got, tc.cancelled)
			}
			if tc.goesOn {
				wantStarted(t, ch)
				if after.CallerOfflineAt != 0 {
					t.Errorf("callerOfflineAt %d after the grace fired, want 0", after.CallerOfflineAt)
				}
			} else {
				wantEnded(t, ch, due, EndCallerOffline)
			}
		})
	}
}

// An offline report made late (its store out of reach, its workers busy)
// arms the grace from when the caller's last stream closed, not from when
// the report ran: a caller gone for a minute-long outage is not given a
// minute more. A grace over by then, or nearly, still leaves
// LateOfflineLeft: in a cluster the caller may be back on another node
// whose online report waited for the store too. A close before the
// call existed counts from the call's creation; a close time after the
// report (clocks apart) counts as now. A stale report (the caller came
// back and left again, reported meanwhile) leaves the later grace armed.
func TestCallerOfflineSince(t *testing.T) {
	grace := testCfg.HeartbeatTimeout.Milliseconds()
	created := now0
	cases := []struct {
		name       string
		since, now int64
		want       int64
	}{
		{"reported at once", created + 5_000, created + 5_000, created + 5_000 + grace},
		{"reported late, within the grace", created + 5_000, created + 5_000 + grace/2, created + 5_000 + grace},
		{"reported with less than LateOfflineLeft of it left", created + 5_000, created + 5_000 + grace - 1_000, created + 5_000 + grace - 1_000 + LateOfflineLeft.Milliseconds()},
		{"reported after the grace ended", created + 5_000, created + 5_000 + 3*grace, created + 5_000 + 3*grace + LateOfflineLeft.Milliseconds()},
		{"closed before the call was made", created - 60_000, created + 1_000, created + grace},
		{"closed after the report ran", created + 9_000, created + 5_000, created + 5_000 + grace},
		{"a stale report after a later one", created + 1_000, created + 20_000, created + 8_000 + grace},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob"}}, created, testCfg, true, nil)
			c := mustChange(t, ch, err)
			if tc.since < created+5_000 && tc.now > created+8_000 {
				// The caller came back and left again at 8 s, reported
				// before this report from 1 s.
				c = mustChange(t, CallerPresence(c, true, created+7_000, testCfg.HeartbeatTimeout), nil)
				c = mustChange(t, CallerOffline(c, created+8_000, created+8_000, testCfg.HeartbeatTimeout), nil)
				if ch := CallerOffline(c.Saved(), tc.since, tc.now, testCfg.HeartbeatTimeout); ch != nil {
					t.Fatalf("a stale report changed the call: callerOfflineAt %d", ch.Call.CallerOfflineAt)
				}
			} else {
				c = mustChange(t, CallerOffline(c, tc.since, tc.now, testCfg.HeartbeatTimeout), nil)
			}
			if c.CallerOfflineAt != tc.want {
				t.Fatalf("callerOfflineAt %d, want %d", c.CallerOfflineAt, tc.want)
			}
			if ch := Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: tc.want}, max(tc.now, tc.want)); ch == nil || ch.Call.State != CallEnded {
				t.Fatalf("the armed grace did not end the call at %d", max(tc.now, tc.want))
			}
		})
	}
}
