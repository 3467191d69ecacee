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
// a first invitation ended unanswered gets no second call.missed, and an
// invitee who answered the first one (here: rejected) gets none for a later
// invitation that goes unanswered either.
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

	// Both are invited again and both miss it: carol's call.missed was
	// sent, and dave answered this call: neither gets one.
	reinvite("carol", "dave")
	now += 1000
	ch, _, err := Cancel(c, as("bob"), CancelInput{}, now)
	step(errFree(t)(ch, err))
	if got := missedHooks(t, ch); len(got) != 0 {
		t.Fatalf("second round: call.missed %+v, want none", got)
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

// "never for a user who accepted or rejected": an answer settles the
// user's call.missed for the rest of the call, so an advanced-call user who
// accepted, joined or rejected and is invited again gets no call.missed
// when that invitation ends unanswered, however it ends. The caller, who
// answered nothing, still gets one when invited back, and so does an
// invitee who never answered. Each case plays its steps on alice's advanced
// call to bob and carol, both pending; bob stays in so the call goes on.
func TestCallMissedNeverAfterAnAnswer(t *testing.T) {
	type step func(c *Call, now int64) (*Change, error)
	accept := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Answer(c, as(id), true, "", now) }
	}
	reject := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Answer(c, as(id), false, "", now) }
	}
	join := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Join(c, as(id), "", now, testCfg) }
	}
	quit := func(id string) step {
		return func(c *Call, now int64) (*Change, error) { return Quit(c, as(id), LeaveInput{}, now) }
	}
	invite := func(id string) step { // by bob
		return func(c *Call, now int64) (*Change, error) {
			ch, _, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{id}}, now, testCfg, nil)
			return ch, err
		}
	}
	timeout := func(id string) step {
		return func(c *Call, _ int64) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: id, Kind: DeadlineTimeout}, c.User(id).TimeoutAt), nil
		}
	}
	cancel := func(c *Call, now int64) (*Change, error) {
		ch, _, err := Cancel(c, as("bob"), CancelInput{}, now)
		return ch, err
	}
	end := func(c *Call, now int64) (*Change, error) { return End(c, as("bob"), LeaveInput{}, now) }
	cases := []struct {
		name  string
		steps []step
		// missed: the users call.missed is sent for, over all the steps.
		missed []string
	}{
		{"rejected, invited again, timed out", []step{accept("bob"), reject("carol"), invite("carol"), timeout("carol")}, nil},
		{"rejected, invited again, cancelled", []step{accept("bob"), reject("carol"), invite("carol"), cancel}, nil},
		{"accepted and quit, invited again, timed out", []step{accept("bob"), accept("carol"), quit("carol"), invite("carol"), timeout("carol")}, nil},
		{"accepted and quit, invited again, call ended", []step{accept("bob"), accept("carol"), quit("carol"), invite("carol"), end}, nil},
		{"joined instead of accepting, quit, invited again, timed out", []step{accept("bob"), join("carol"), quit("carol"), invite("carol"), timeout("carol")}, nil},
		{"joined uninvited, quit, invited, timed out", []step{accept("bob"), reject("carol"), join("dave"), quit("dave"), invite("dave"), timeout("dave")}, nil},
		{"never answered, timed out", []step{accept("bob"), timeout("carol")}, []string{"carol"}},
		{"the caller, invited back after quitting, timed out", []step{accept("bob"), reject("carol"), quit("alice"), invite("alice"), timeout("alice")}, []string{"alice"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol"}}, now0, testCfg, false, nil)
			c := mustChange(t, ch, err)
			var missed []string
			for i, s := range tc.steps {
				now := now0 + int64(i+1)*1000
				ch, err := s(c, now)
				c = mustChange(t, ch, err)
				for _, m := range missedHooks(t, ch) {
					missed = append(missed, m.UserID)
				}
			}
			if c.State != CallStarted && c.EndReason != EndByEnd {
				t.Fatalf("the call ended (%s) before the last step", c.EndReason)
			}
			if !reflect.DeepEqual(missed, tc.missed) {
				t.Errorf("call.missed sent for %v, want %v", missed, tc.missed)
			}
		})
	}
}

// An answer records itself in MissedTime, written with the change, since
// the store must keep it for any later invitation of the user.
func TestAnswerSettlesCallMissed(t *testing.T) {
	cases := []struct {
		name string
		run  func(c *Call) (*Change, error)
	}{
		{"accept", func(c *Call) (*Change, error) { return Answer(c, as("bob"), true, "", tableNow) }},
		{"reject", func(c *Call) (*Change, error) { return Answer(c, as("bob"), false, "", tableNow) }},
		{"join", func(c *Call) (*Change, error) { return Join(c, as("bob"), "", tableNow, testCfg) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := tc.run(tableCall(ModeAdvanced, StateReceived))
			c := mustChange(t, ch, err)
			if u := c.User("bob"); u.MissedTime != tableNow || !u.Dirty() {
				t.Errorf("bob's missed time %d (dirty %v), want %d saved", u.MissedTime, u.Dirty(), tableNow)
			}
		})
	}
	t.Run("an earlier call.missed keeps its time", func(t *testing.T) {
		c := tableCall(ModeAdvanced, StateReceived)
		c.User("bob").MissedTime = now0
		ch, err := Answer(c, as("bob"), true, "", tableNow)
		c = mustChange(t, ch, err)
		if got := c.User("bob").MissedTime; got != now0 {
			t.Errorf("bob's missed time %d, want %d", got, now0)
		}
	})
}

// During a rolling upgrade from a version before 0ead6cf, a node of that
// version saves an accept without settling call.missed (MissedTime stays
// 0). The user, quitting and invited again by a newer node, must still
// get no call.missed when that invitation goes unanswered: he answered
// this call once.
func TestCallMissedNeverAfterAnAcceptAnOlderNodeSaved(t *testing.T) {
	ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol"}}, now0, testCfg, false, nil)
	c := mustChange(t, ch, err)
	ch, err = Answer(c, as("bob"), true, "", now0+1000)
	c = mustChange(t, ch, err)
	ch, err = Answer(c, as("carol"), true, "", now0+2000)
	c = mustChange(t, ch, err)
	c.User("carol").MissedTime = 0 // as the older node saved the accept
	ch, err = Quit(c, as("carol"), LeaveInput{}, now0+3000)
	c = mustChange(t, ch, err)
	ch, _, err = CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{"carol"}}, now0+4000, testCfg, nil)
	c = mustChange(t, ch, err)
	ch = Expire(c, Deadline{CallID: c.ID, UserID: "carol", Kind: DeadlineTimeout}, c.User("carol").TimeoutAt)
	if ch == nil || ch.Call.User("carol").State != StateTimeout {
		t.Fatal("carol's timeout changed nothing")
	}
	if got := missedHooks(t, ch); len(got) != 0 {
		t.Errorf("call.missed %+v for carol, who accepted before", got)
	}
}

// As TestCallMissedNeverAfterAnAcceptAnOlderNodeSaved, for a join and a
// rejection an older node saved (MissedTime 0). The invitation that
// follows erased their trace: a joiner's AcceptTime is cleared when he is
// invited (so that his join does not count as an accepted invitation),
// and a rejected invitee becomes inviting again. Either then got the
// call.missed the rule forbids when it went unanswered.
func TestCallMissedNeverAfterAJoinOrRejectionAnOlderNodeSaved(t *testing.T) {
	for _, answer := range []string{"join", "reject"} {
		t.Run(answer, func(t *testing.T) {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol"}}, now0, testCfg, false, nil)
			c := mustChange(t, ch, err)
			ch, err = Answer(c, as("bob"), true, "", now0+1000)
			c = mustChange(t, ch, err)
			if answer == "join" {
				ch, err = Join(c, as("dave"), "", now0+2000, testCfg)
				c = mustChange(t, ch, err)
				c.User("dave").MissedTime = 0 // as the older node saved the join
				ch, err = Quit(c, as("dave"), LeaveInput{}, now0+3000)
				c = mustChange(t, ch, err)
			} else {
				ch, err = Answer(c, as("carol"), false, "", now0+2000)
				c = mustChange(t, ch, err)
				c.User("carol").MissedTime = 0 // as the older node saved the rejection
			}
			who := map[string]string{"join": "dave", "reject": "carol"}[answer]
			ch, _, err = CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{who}}, now0+4000, testCfg, nil)
			c = mustChange(t, ch, err)
			ch = Expire(c, Deadline{CallID: c.ID, UserID: who, Kind: DeadlineTimeout}, c.User(who).TimeoutAt)
			if ch == nil || ch.Call.User(who).State != StateTimeout {
				t.Fatalf("%s's timeout changed nothing", who)
			}
			if got := missedHooks(t, ch); len(got) != 0 {
				t.Errorf("call.missed %+v for %s, who answered (%s) before", got, who, answer)
			}
		})
	}
}
