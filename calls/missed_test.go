package calls

import (
	"encoding/json"
	"reflect"
	"testing"
)

// missedHooks decodes a change's call.missed hooks, in order.
func missedHooks(t *testing.T, ch *Change) []callMissedHookData {
	t.Helper()
	var out []callMissedHookData
	if ch == nil {
		return nil
	}
	for _, h := range ch.Hooks {
		if h.Type != HookCallMissed {
			continue
		}
		var d callMissedHookData
		if err := json.Unmarshal(h.Data, &d); err != nil {
			t.Fatalf("call.missed data %s: %v", h.Data, err)
		}
		if h.CallID != d.CallID || h.Time != d.Time {
			t.Errorf("call.missed hook callID/time %s/%d, data %s/%d", h.CallID, h.Time, d.CallID, d.Time)
		}
		out = append(out, d)
	}
	return out
}

// missedOf builds the expected data of one call.missed in a tableCall
// (caller alice; carol invited by alice, dave by bob).
func missedOf(user, inviter string, reason MissedReason, at int64) callMissedHookData {
	return callMissedHookData{CallID: "call0123456789abcdef", UserID: user, Caller: "alice", Inviter: inviter, Reason: reason, Time: at}
}

// call.missed in each of its four causes, and never for an answer: the
// transitions that end a pending invitation produce it with the change.
func TestCallMissed(t *testing.T) {
	offline := func(c *Call) *Call {
		c.CallerTracked, c.CallerOfflineAt = true, tableNow
		return c
	}
	cases := []struct {
		name string
		run  func(t *testing.T) *Change
		want []callMissedHookData
	}{
		{"a timeout", func(t *testing.T) *Change {
			c := tableCall(ModeAdvanced, StateAccepted)
			return Expire(c, Deadline{CallID: c.ID, UserID: "dave", Kind: DeadlineTimeout}, now0+90_000)
		}, []callMissedHookData{missedOf("dave", "bob", MissedTimeout, now0+90_000)}},
		{"the last timeout of a general call", func(t *testing.T) *Change {
			c := buildCall(ModeGeneral, row("bob", StateReceived, "alice"))
			ch := Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineTimeout}, now0+90_000)
			if got := hookTypes(ch); !reflect.DeepEqual(got, []HookType{HookUserStateChanged, HookCallMissed, HookCallEnded}) {
				t.Errorf("hooks %v: call.missed goes after the state change and before the end", got)
			}
			return ch
		}, []callMissedHookData{missedOf("bob", "alice", MissedTimeout, now0+90_000)}},
		{"a cancel of some", func(t *testing.T) *Change {
			ch, _, err := Cancel(tableCall(ModeAdvanced, StateAccepted), as("alice"), CancelInput{Invitees: []string{"carol"}}, tableNow)
			return errFree(t)(ch, err)
		}, []callMissedHookData{missedOf("carol", "alice", MissedCancelled, tableNow)}},
		{"a cancel of all pending by their inviter", func(t *testing.T) *Change {
			ch, _, err := Cancel(tableCall(ModeAdvanced, StateAccepted), as("bob"), CancelInput{}, tableNow)
			return errFree(t)(ch, err)
		}, []callMissedHookData{missedOf("dave", "bob", MissedCancelled, tableNow)}},
		{"the caller going offline", func(t *testing.T) *Change {
			c := offline(tableCall(ModeGeneral, StateNotYetReceived))
			return Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline}, tableNow)
		}, []callMissedHookData{
			missedOf("bob", "alice", MissedCallerOffline, tableNow),
			missedOf("carol", "alice", MissedCallerOffline, tableNow),
			missedOf("dave", "bob", MissedCallerOffline, tableNow),
		}},
		{"an end with invitations pending", func(t *testing.T) *Change {
			return errFree(t)(End(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{}, tableNow))
		}, []callMissedHookData{
			missedOf("carol", "alice", MissedEnded, tableNow),
			missedOf("dave", "bob", MissedEnded, tableNow),
		}},
		{"the caller, invited back after quitting, timing out", func(t *testing.T) *Change {
			c := buildCall(ModeAdvanced, row("bob", StateAccepted, "alice"))
			caller := c.User("alice")
			caller.State, caller.Inviter, caller.InviteTime, caller.TimeoutAt = StateInviting, "bob", now0, now0+90_000
			return Expire(c, Deadline{CallID: c.ID, UserID: "alice", Kind: DeadlineTimeout}, now0+90_000)
		}, []callMissedHookData{missedOf("alice", "bob", MissedTimeout, now0+90_000)}},
		{"an end with nobody pending", func(t *testing.T) *Change {
			c := buildCall(ModeAdvanced, row("bob", StateAccepted, "alice"), row("carol", StateRejected, "alice"), row("dave", StateTimeout, "alice"))
			return errFree(t)(End(c, as("bob"), LeaveInput{}, tableNow))
		}, nil},
		{"an accept", func(t *testing.T) *Change {
			return errFree(t)(Answer(tableCall(ModeGeneral, StateReceived), as("bob"), true, "", tableNow))
		}, nil},
		{"the last reject of a general call", func(t *testing.T) *Change {
			return errFree(t)(Answer(buildCall(ModeGeneral, row("bob", StateInviting, "alice")), as("bob"), false, "", tableNow))
		}, nil},
		{"a quit that leaves invitations pending", func(t *testing.T) *Change {
			return errFree(t)(Quit(tableCall(ModeAdvanced, StateAccepted), as("bob"), LeaveInput{}, tableNow))
		}, nil},
		{"a not-received check", func(t *testing.T) *Change {
			c := buildCall(ModeGeneral, row("bob", StateInviting, "alice"))
			c.User("bob").NotReceivedAt = tableNow
			return Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineNotReceived}, tableNow)
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := tc.run(t)
			if ch == nil {
				t.Fatal("no change")
			}
			if got := missedHooks(t, ch); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("call.missed %+v, want %+v", got, tc.want)
			}
			for _, w := range tc.want {
				if u := ch.Call.User(w.UserID); u.MissedTime != w.Time || !u.Dirty() {
					t.Errorf("%s: missed time %d (dirty %v), want %d saved", w.UserID, u.MissedTime, u.Dirty(), w.Time)
				}
			}
		})
	}
}

// Once per invitee per call: an advanced-call invitee invited again after
// a first invitation ended unanswered gets no second call.missed, while an
// invitee whose first invitation was answered does get one for a later
// invitation that goes unanswered.
func TestCallMissedOncePerInviteePerCall(t *testing.T) {
	c := tableCall(ModeAdvanced, StateAccepted) // bob accepted; carol, dave pending
	now := tableNow
	step := func(ch *Change) *Change {
		t.Helper()
		c = mustChange(t, ch, nil)
		return ch
	}
	reinvite := func(ids ...string) {
		t.Helper()
		now += 1000
		ch, errUsers, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: ids}, now, testCfg, nil)
		wantCode(t, err, "")
		if len(errUsers) != 0 {
			t.Fatalf("re-invite %v: errorUserList %v", ids, errUsers)
		}
		step(ch)
	}
	timeout := func(id string) *Change {
		t.Helper()
		now = c.User(id).TimeoutAt
		return step(Expire(c, Deadline{CallID: c.ID, UserID: id, Kind: DeadlineTimeout}, now))
	}

	// carol misses the first invitation: call.missed.
	first := timeout("carol")
	if got := missedHooks(t, first); len(got) != 1 || got[0].UserID != "carol" {
		t.Fatalf("first timeout: call.missed %+v, want carol's", got)
	}
	missedAt := c.User("carol").MissedTime
	// dave rejects his.
	now += 1000
	step(errFree(t)(Answer(c, as("dave"), false, "", now)))

	// Both are invited again and both miss it: only dave, whose first
	// invitation was answered, gets a call.missed.
	reinvite("carol", "dave")
	now += 1000
	ch, _, err := Cancel(c, as("bob"), CancelInput{}, now)
	step(errFree(t)(ch, err))
	if got := missedHooks(t, ch); len(got) != 1 || got[0].UserID != "dave" || got[0].Inviter != "bob" || got[0].Reason != MissedCancelled {
		t.Fatalf("second round: call.missed %+v, want dave's only (cancelled by bob)", got)
	}
	if got := c.User("carol").MissedTime; got != missedAt {
		t.Fatalf("carol's missed time moved from %d to %d", missedAt, got)
	}

	// A third round ended by end: neither gets another.
	reinvite("carol", "dave")
	now += 1000
	ch = step(errFree(t)(End(c, as("bob"), LeaveInput{}, now)))
	if got := missedHooks(t, ch); len(got) != 0 {
		t.Fatalf("third round: call.missed %+v, want none", got)
	}
}
