package calls

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The state machine checked against the seed's state × operation table and
// the contract's lifecycle, deadline and "which error" rules. Every call here
// is built by hand or by the pure transitions; nothing touches a store.

const now0 int64 = 1_700_000_000_000 // creation time of every test call

var testCfg = Config{MaxCallUsers: DefaultMaxCallUsers, NotReceivedAfter: 5 * time.Second, HeartbeatTimeout: 30 * time.Second}

// as is a user acting from the default device.
func as(userID string) Actor { return Actor{UserID: userID, Device: "default"} }

// on is a user acting from a named device.
func on(userID, device string) Actor { return Actor{UserID: userID, Device: device} }

// wantCode fails unless err carries the domain code want ("" = no error).
func wantCode(t *testing.T, err error, want Code) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	if got := CodeOf(err); got != want {
		t.Fatalf("error = %v (code %q), want code %q", err, got, want)
	}
}

func outcome(c Code) string {
	if c == "" {
		return "is allowed"
	}
	return "is " + string(c)
}

// member row builders for hand-built calls. Rows are consistent with what
// the transitions would have produced: pending rows have a timeout armed,
// rows that once accepted have an accept time and a main device.
func row(id string, s UserState, inviter string) *CallUser {
	u := &CallUser{UserID: id, State: s, Inviter: inviter, UpdateTime: now0, InviteTime: now0}
	if s.Pending() {
		u.TimeoutAt = now0 + 90_000
	}
	if s == StateAccepted || s == StateQuit {
		u.AcceptTime = now0 + 1
		u.MainDevice = "phone"
	}
	return u
}

// buildCall returns a started call whose caller alice is accepted, followed
// by the given rows.
func buildCall(mode Mode, users ...*CallUser) *Call {
	caller := &CallUser{UserID: "alice", State: StateAccepted, Inviter: "alice", UpdateTime: now0, AcceptTime: now0}
	return &Call{
		ID: "call0123456789abcdef", Seq: 1, Caller: "alice", Mode: mode, State: CallStarted, Timeout: 90,
		ExtendedData: "call-ext", CreateTime: now0, Users: append([]*CallUser{caller}, users...),
	}
}

// endedCopy returns c as the End transition leaves it: states kept, timers cleared.
func endedCopy(c *Call) *Call {
	c = c.Clone()
	c.State, c.EndTime, c.EndReason = CallEnded, now0+5_000, EndByEnd
	for _, u := range c.Users {
		u.TimeoutAt, u.NotReceivedAt = 0, 0
	}
	return c
}

// mustChange fails on an error or a nil change and returns the new call.
func mustChange(t *testing.T, ch *Change, err error) *Call {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error %v", err)
	}
	if ch == nil {
		t.Fatal("change is nil, want a change")
	}
	return ch.Call
}

func newCall(t *testing.T, mode Mode, in InviteInput, invitees ...string) (*Change, *Call) {
	t.Helper()
	in.Mode, in.Invitees = mode, invitees
	ch, _, err := NewCall("call0123456789abcdef", as("alice"), in, now0, testCfg, false, nil)
	return ch, mustChange(t, ch, err)
}

func stateOf(t *testing.T, c *Call, userID string) UserState {
	t.Helper()
	u := c.User(userID)
	if u == nil {
		t.Fatalf("%s is not in the call", userID)
	}
	return u.State
}

func wantStates(t *testing.T, c *Call, want map[string]UserState) {
	t.Helper()
	for id, s := range want {
		if got := stateOf(t, c, id); got != s {
			t.Errorf("%s is %s, want %s", id, got, s)
		}
	}
}

// endedHook decodes the change's call.ended hook, failing when there is none.
func endedHook(t *testing.T, ch *Change) callEndedHookData {
	t.Helper()
	var found []callEndedHookData
	for _, h := range ch.Hooks {
		if h.Type == HookCallEnded {
			var d callEndedHookData
			if err := json.Unmarshal(h.Data, &d); err != nil {
				t.Fatalf("call.ended data: %v", err)
			}
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("got %d call.ended hooks, want 1 (hooks %v)", len(found), hookTypes(ch))
	}
	return found[0]
}

func hookTypes(ch *Change) []HookType {
	if ch == nil {
		return nil
	}
	var ts []HookType
	for _, h := range ch.Hooks {
		ts = append(ts, h.Type)
	}
	return ts
}

func wantStarted(t *testing.T, ch *Change) {
	t.Helper()
	if c := ch.Call; c.State != CallStarted || c.EndTime != 0 {
		t.Errorf("call state %s endTime %d, want started with endTime 0", c.State, c.EndTime)
	}
	if slices.Contains(hookTypes(ch), HookCallEnded) {
		t.Errorf("hooks %v contain call.ended for a call that goes on", hookTypes(ch))
	}
}

func wantEnded(t *testing.T, ch *Change, now int64, reason EndReason) {
	t.Helper()
	c := ch.Call
	if c.State != CallEnded || c.EndTime != now || c.EndReason != reason {
		t.Errorf("call state %s endTime %d reason %q, want ended at %d with reason %q", c.State, c.EndTime, c.EndReason, now, reason)
	}
	if h := endedHook(t, ch); h.Reason != reason || h.EndTime != now || h.CallID != c.ID {
		t.Errorf("call.ended hook %+v, want reason %q endTime %d callID %s", h, reason, now, c.ID)
	}
	for _, u := range c.Users {
		if u.TimeoutAt != 0 || u.NotReceivedAt != 0 {
			t.Errorf("%s keeps timers (timeoutAt %d, notReceivedAt %d) after the call ended", u.UserID, u.TimeoutAt, u.NotReceivedAt)
		}
	}
	if c.CallerOfflineAt != 0 {
		t.Errorf("callerOfflineAt %d after the call ended", c.CallerOfflineAt)
	}
}

// ---------------------------------------------------------------------------
// The seed's state × operation table.

// tableCall is the call of the table test: alice the caller (accepted), bob
// the actor in state s (invited by alice), carol pending (invited by alice,
// so the call stays started whatever bob does) and dave pending, invited by
// bob (so bob has an invitation of his own to cancel).
func tableCall(mode Mode, s UserState) *Call {
	return buildCall(mode,
		row("bob", s, "alice"),
		row("carol", StateInviting, "alice"),
		row("dave", StateReceived, "bob"),
	)
}

const tableNow = now0 + 10_000

type tableOp struct {
	name         string
	advancedOnly bool // the seed's advanced-mode operations: wrong_mode on a general call
	run          func(c *Call, a Actor) (*Change, error)
	device       string // the device the actor acts from
	// check asserts the outcome of a successful operation by a.
	check func(t *testing.T, before, after *Call, a Actor)
}

func cancelOp(invitees ...string) func(c *Call, a Actor) (*Change, error) {
	return func(c *Call, a Actor) (*Change, error) {
		ch, errInvitees, err := Cancel(c, a, CancelInput{Invitees: invitees, ExtendedData: "cancel-ext"}, tableNow)
		if err == nil && errInvitees == nil {
			return ch, fmt.Errorf("errorInvitees is nil, want a (possibly empty) list")
		}
		return ch, err
	}
}

var tableOps = []tableOp{
	{name: "cancel of the invitee they invited", run: cancelOp("dave"), device: "phone",
		check: func(t *testing.T, before, after *Call, a Actor) {
			wantStates(t, after, map[string]UserState{"dave": StateCancelled, "carol": StateInviting, a.UserID: before.User(a.UserID).State})
		}},
	{name: "cancel with an empty list (all their pending invitees)", run: cancelOp(), device: "phone",
		check: func(t *testing.T, before, after *Call, a Actor) {
			wantStates(t, after, map[string]UserState{"dave": StateCancelled, "carol": StateInviting, a.UserID: before.User(a.UserID).State})
		}},
	{name: "cancel of an invitee someone else invited", run: cancelOp("carol"), device: "phone"},
	{name: "cancel of their own invitation", run: cancelOp("bob"), device: "phone"},
	{name: "accept", device: "phone",
		run: func(c *Call, a Actor) (*Change, error) { return Answer(c, a, true, "yes", tableNow) },
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User(a.UserID)
			if u.State != StateAccepted || u.MainDevice != a.Device || u.ExtendedData != "yes" || u.TimeoutAt != 0 {
				t.Errorf("after accept: %+v, want accepted on %s with extendedData yes and no timeout", *u, a.Device)
			}
		}},
	{name: "reject", device: "phone",
		run: func(c *Call, a Actor) (*Change, error) { return Answer(c, a, false, "no", tableNow) },
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User(a.UserID)
			if u.State != StateRejected || u.ExtendedData != "no" || u.TimeoutAt != 0 {
				t.Errorf("after reject: %+v, want rejected with extendedData no and no timeout", *u)
			}
		}},
	{name: "callingInvite", advancedOnly: true, device: "phone",
		run: func(c *Call, a Actor) (*Change, error) {
			ch, errUsers, err := CallingInvite(c, a, CallingInviteInput{Invitees: []string{"erin"}}, tableNow, testCfg, nil)
			if err == nil && len(errUsers) != 0 {
				return ch, fmt.Errorf("errorUserList %v, want empty", errUsers)
			}
			return ch, err
		},
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User("erin")
			if u == nil || u.State != StateInviting || u.Inviter != a.UserID {
				t.Errorf("erin after callingInvite: %+v, want inviting, invited by %s", u, a.UserID)
			}
		}},
	{name: "join from the main device", advancedOnly: true, device: "phone",
		run: func(c *Call, a Actor) (*Change, error) { return Join(c, a, "join-ext", tableNow, testCfg) },
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User(a.UserID)
			if u.State != StateAccepted || u.MainDevice != a.Device || u.ExtendedData != "join-ext" {
				t.Errorf("after join: %+v, want accepted on %s with extendedData join-ext", *u, a.Device)
			}
		}},
	{name: "join from another device", advancedOnly: true, device: "tablet",
		run: func(c *Call, a Actor) (*Change, error) { return Join(c, a, "join-ext", tableNow, testCfg) },
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User(a.UserID)
			if u.State != StateAccepted || u.MainDevice != a.Device || u.ExtendedData != "join-ext" {
				t.Errorf("after join: %+v, want accepted on %s with extendedData join-ext", *u, a.Device)
			}
		}},
	{name: "quit", advancedOnly: true, device: "phone",
		run: func(c *Call, a Actor) (*Change, error) {
			return Quit(c, a, LeaveInput{ExtendedData: "bye"}, tableNow)
		},
		check: func(t *testing.T, before, after *Call, a Actor) {
			u := after.User(a.UserID)
			if u.State != StateQuit || u.ExtendedData != "bye" {
				t.Errorf("after quit: %+v, want quit with extendedData bye", *u)
			}
		}},
	{name: "end", advancedOnly: true, device: "phone",
		run: func(c *Call, a Actor) (*Change, error) {
			return End(c, a, LeaveInput{ExtendedData: "bye"}, tableNow)
		},
		check: func(t *testing.T, before, after *Call, a Actor) {
			if after.State != CallEnded {
				t.Errorf("call is %s after end, want ended", after.State)
			}
			for _, u := range before.Users {
				if got := after.User(u.UserID).State; got != u.State {
					t.Errorf("end changed %s from %s to %s; user states must stay as they are", u.UserID, u.State, got)
				}
			}
		}},
}

const (
	ok  Code = ""
	fbd      = CodeForbidden
	bad      = CodeInvalidState
	aic      = CodeAlreadyInCall
)

// stateOpRows is the seed's table for an advanced-mode call, one column per
// tableOps entry. In general mode the advanced-only columns are wrong_mode.
//
// Cancel is allowed to the inviter of a pending invitee "regardless of the
// user state"; accept and reject need a pending invitation; callingInvite,
// quit and end need accepted; join is open to every state except accepted on
// the very device that is already the main device.
var stateOpRows = []struct {
	state UserState
	want  [11]Code
}{
	//                        cancel mine, cancel all, cancel other's, cancel self, accept, reject, callingInvite, join main, join other, quit, end
	{StateInviting, [11]Code{ok, ok, fbd, fbd, ok, ok, bad, ok, ok, bad, bad}},
	{StateReceived, [11]Code{ok, ok, fbd, fbd, ok, ok, bad, ok, ok, bad, bad}},
	{StateNotYetReceived, [11]Code{ok, ok, fbd, fbd, ok, ok, bad, ok, ok, bad, bad}},
	{StateAccepted, [11]Code{ok, ok, fbd, fbd, bad, bad, ok, aic, ok, ok, ok}},
	{StateRejected, [11]Code{ok, ok, fbd, fbd, bad, bad, bad, ok, ok, bad, bad}},
	{StateCancelled, [11]Code{ok, ok, fbd, fbd, bad, bad, bad, ok, ok, bad, bad}},
	{StateTimeout, [11]Code{ok, ok, fbd, fbd, bad, bad, bad, ok, ok, bad, bad}},
	{StateQuit, [11]Code{ok, ok, fbd, fbd, bad, bad, bad, ok, ok, bad, bad}},
}

func TestStateOperationTable(t *testing.T) {
	if len(tableOps) != len(stateOpRows[0].want) {
		t.Fatalf("%d operations but %d columns", len(tableOps), len(stateOpRows[0].want))
	}
	for _, mode := range []Mode{ModeGeneral, ModeAdvanced} {
		for _, r := range stateOpRows {
			for i, op := range tableOps {
				want := r.want[i]
				if mode == ModeGeneral && op.advancedOnly {
					want = CodeWrongMode
				}
				t.Run(fmt.Sprintf("%s call/bob %s/%s %s", mode, r.state, op.name, outcome(want)), func(t *testing.T) {
					c := tableCall(mode, r.state)
					before := c.Clone()
					a := on("bob", op.device)
					ch, err := op.run(c, a)
					if !reflect.DeepEqual(c, before) {
						t.Errorf("the transition modified the call it was given")
					}
					wantCode(t, err, want)
					if want != ok {
						if ch != nil {
							t.Errorf("a refused %s returned a change", op.name)
						}
						return
					}
					after := mustChange(t, ch, nil)
					if op.check != nil {
						op.check(t, before, after, a)
					}
				})
			}
		}
	}
}

// Whatever the actor's state, an ended call answers call_ended, checked
// before the state and before the mode.
func TestStateOperationTableOnEndedCall(t *testing.T) {
	for _, mode := range []Mode{ModeGeneral, ModeAdvanced} {
		for _, r := range stateOpRows {
			for _, op := range tableOps {
				t.Run(fmt.Sprintf("%s call/bob %s/%s is call_ended", mode, r.state, op.name), func(t *testing.T) {
					c := endedCopy(tableCall(mode, r.state))
					before := c.Clone()
					ch, err := op.run(c, on("bob", op.device))
					wantCode(t, err, CodeCallEnded)
					if ch != nil {
						t.Error("a refused action returned a change")
					}
					if !reflect.DeepEqual(c, before) {
						t.Error("the transition modified the call it was given")
					}
				})
			}
		}
	}
}

// A user who is not in the call gets call_not_found, except that anyone
// holding the callID of an advanced call may join it while there is room.
func TestNonMember(t *testing.T) {
	for _, mode := range []Mode{ModeGeneral, ModeAdvanced} {
		for _, op := range tableOps {
			want := CodeCallNotFound
			if mode == ModeAdvanced && strings.HasPrefix(op.name, "join") {
				want = ok
			}
			t.Run(fmt.Sprintf("%s call/eve, not in the call/%s %s", mode, op.name, outcome(want)), func(t *testing.T) {
				c := tableCall(mode, StateInviting)
				ch, err := op.run(c, on("eve", op.device))
				wantCode(t, err, want)
				if want != ok {
					return
				}
				after := mustChange(t, ch, nil)
				u := after.User("eve")
				if u == nil || u.State != StateAccepted || u.MainDevice != op.device {
					t.Errorf("eve after join: %+v, want accepted on %s", u, op.device)
				}
			})
		}
		t.Run(fmt.Sprintf("%s call/eve, not in an ended call/accept is call_not_found", mode), func(t *testing.T) {
			_, err := Answer(endedCopy(tableCall(mode, StateInviting)), as("eve"), true, "", tableNow)
			wantCode(t, err, CodeCallNotFound)
		})
	}
	t.Run("advanced call/eve joins a call that already has MaxCallUsers users/is call_not_found", func(t *testing.T) {
		c := tableCall(ModeAdvanced, StateInviting)
		for i := len(c.Users); i < testCfg.MaxCallUsers; i++ {
			c.Users = append(c.Users, row(fmt.Sprintf("u%d", i), StateRejected, "alice"))
		}
		_, err := Join(c, as("eve"), "", tableNow, testCfg)
		wantCode(t, err, CodeCallNotFound)
		// Ended too: still call_not_found, not call_ended, which would tell
		// an outsider the call exists.
		_, err = Join(endedCopy(c), as("eve"), "", tableNow, testCfg)
		wantCode(t, err, CodeCallNotFound)
		// A member already in the list still may join a full call.
		ch, err := Join(c, as("u9"), "", tableNow, testCfg)
		wantStates(t, mustChange(t, ch, err), map[string]UserState{"u9": StateAccepted})
	})
}

func TestCallerCannotAnswerOwnCall(t *testing.T) {
	for _, mode := range []Mode{ModeGeneral, ModeAdvanced} {
		for _, accept := range []bool{true, false} {
			name := map[bool]string{true: "accept", false: "reject"}[accept]
			t.Run(fmt.Sprintf("%s call/the caller's %s of its own call is invalid_state", mode, name), func(t *testing.T) {
				_, err := Answer(tableCall(mode, StateInviting), as("alice"), accept, "", tableNow)
				wantCode(t, err, CodeInvalidState)
			})
		}
	}
}

// ---------------------------------------------------------------------------
// Cancel: who may cancel what, and what comes back in errorInvitees.

func TestCancelRules(t *testing.T) {
	// alice invited carol (pending) and greta (timed out); bob, accepted,
	// invited dave (pending) and frank (rejected).
	base := func() *Call {
		return buildCall(ModeAdvanced,
			row("bob", StateAccepted, "alice"),
			row("carol", StateReceived, "alice"),
			row("greta", StateTimeout, "alice"),
			row("dave", StateInviting, "bob"),
			row("frank", StateRejected, "bob"),
		)
	}
	cases := []struct {
		name          string
		actor         string
		invitees      []string
		prepare       func(c *Call)
		want          Code
		message       string // part of the error's message, when set
		errInvitees   []string
		cancelled     []string
		stillInvolved []string // users whose state must not change
	}{
		{name: "the inviter cancels its pending invitee", actor: "alice", invitees: []string{"carol"},
			errInvitees: []string{}, cancelled: []string{"carol"}, stillInvolved: []string{"dave"}},
		{name: "an empty list cancels every pending invitee the actor invited and nobody else's", actor: "alice",
			errInvitees: []string{}, cancelled: []string{"carol"}, stillInvolved: []string{"dave", "greta"}},
		{name: "an empty list from bob cancels only bob's pending invitee", actor: "bob",
			errInvitees: []string{}, cancelled: []string{"dave"}, stillInvolved: []string{"carol"}},
		{name: "an invitee someone else invited comes back in errorInvitees", actor: "alice", invitees: []string{"carol", "dave"},
			errInvitees: []string{"dave"}, cancelled: []string{"carol"}, stillInvolved: []string{"dave"}},
		{name: "a named invitee no longer pending comes back in errorInvitees", actor: "alice", invitees: []string{"greta", "carol"},
			errInvitees: []string{"greta"}, cancelled: []string{"carol"}, stillInvolved: []string{"greta"}},
		{name: "a named user not in the call comes back in errorInvitees", actor: "alice", invitees: []string{"carol", "nobody"},
			errInvitees: []string{"nobody"}, cancelled: []string{"carol"}},
		{name: "naming only invitees the actor did not invite is forbidden", actor: "alice", invitees: []string{"dave"},
			want: CodeForbidden},
		{name: "naming only users not in the call is forbidden", actor: "alice", invitees: []string{"nobody"},
			want: CodeForbidden},
		{name: "an invitee cancelling is forbidden", actor: "carol", invitees: []string{"greta"},
			want: CodeForbidden},
		{name: "an empty list when the actor invited no one is forbidden", actor: "carol",
			want: CodeForbidden, message: "invited no one"},
		{name: "an empty list when the actor's invitees all answered is invalid_state, as for a named one", actor: "bob",
			prepare: func(c *Call) { c.User("dave").State, c.User("dave").TimeoutAt = StateAccepted, 0 },
			want:    CodeInvalidState, message: "none of your invitations"},
		{name: "naming only the actor's invitees that are no longer pending is invalid_state", actor: "alice", invitees: []string{"greta"},
			want: CodeInvalidState},
		{name: "naming the actor's answered invitee and someone else's is invalid_state", actor: "bob", invitees: []string{"frank", "carol"},
			want: CodeInvalidState},
		{name: "a user not in the call is call_not_found", actor: "eve", invitees: []string{"carol"},
			want: CodeCallNotFound},
		{name: "on an ended call is call_ended", actor: "alice", invitees: []string{"carol"},
			prepare: func(c *Call) { c.State, c.EndTime = CallEnded, now0+1 },
			want:    CodeCallEnded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			if tc.prepare != nil {
				tc.prepare(c)
			}
			before := c.Clone()
			ch, errInvitees, err := Cancel(c, as(tc.actor), CancelInput{Invitees: tc.invitees}, tableNow)
			wantCode(t, err, tc.want)
			if tc.message != "" && (err == nil || !strings.Contains(err.Error(), tc.message)) {
				t.Errorf("error %v, want it to say %q", err, tc.message)
			}
			if tc.want != ok {
				return
			}
			after := mustChange(t, ch, nil)
			if errInvitees == nil || !slices.Equal(errInvitees, tc.errInvitees) {
				t.Errorf("errorInvitees %#v, want %#v", errInvitees, tc.errInvitees)
			}
			for _, id := range tc.cancelled {
				if s := stateOf(t, after, id); s != StateCancelled {
					t.Errorf("%s is %s, want cancelled", id, s)
				}
				if u := after.User(id); u.TimeoutAt != 0 || u.UpdateTime != tableNow {
					t.Errorf("%s: timeoutAt %d updateTime %d, want 0 and %d", id, u.TimeoutAt, u.UpdateTime, tableNow)
				}
			}
			for _, id := range tc.stillInvolved {
				if got, was := stateOf(t, after, id), before.User(id).State; got != was {
					t.Errorf("%s went from %s to %s", id, was, got)
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Lifecycle.

func TestGeneralCallEndsWhenNobodyIsPending(t *testing.T) {
	const now = now0 + 90_000 // carol's timeout is due
	last := []struct {
		name string
		run  func(c *Call) (*Change, error)
	}{
		{"the last pending invitee accepts", func(c *Call) (*Change, error) { return Answer(c, as("carol"), true, "", now) }},
		{"the last pending invitee rejects", func(c *Call) (*Change, error) { return Answer(c, as("carol"), false, "", now) }},
		{"the last pending invitee times out", func(c *Call) (*Change, error) {
			return Expire(c, Deadline{CallID: c.ID, UserID: "carol", Kind: DeadlineTimeout, At: now}, now), nil
		}},
		{"the last pending invitee is cancelled", func(c *Call) (*Change, error) {
			ch, _, err := Cancel(c, as("alice"), CancelInput{Invitees: []string{"carol"}}, now)
			return ch, err
		}},
	}
	for _, first := range []struct {
		name string
		run  func(c *Call) (*Change, error)
	}{
		{"after bob accepted", func(c *Call) (*Change, error) { return Answer(c, as("bob"), true, "", now0+1000) }},
		{"after bob rejected", func(c *Call) (*Change, error) { return Answer(c, as("bob"), false, "", now0+1000) }},
	} {
		for _, l := range last {
			t.Run(first.name+", the call ends with reason completed when "+l.name, func(t *testing.T) {
				_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol")
				ch, err := first.run(c)
				c = mustChange(t, ch, err)
				wantStarted(t, ch)
				ch, err = l.run(c)
				mustChange(t, ch, err)
				wantEnded(t, ch, now, EndCompleted)
				if evs := eventsOf(ch, EventEnded); len(evs) != 0 {
					t.Errorf("callInvitationEnded sent to %v; it is sent on end only", recipientsOf(evs))
				}
			})
		}
	}
}

func TestAdvancedCallLifecycle(t *testing.T) {
	t.Run("answers do not end it while the caller is in", func(t *testing.T) {
		_, c := newCall(t, ModeAdvanced, InviteInput{}, "bob", "carol", "dave", "erin")
		steps := []func(c *Call) (*Change, error){
			func(c *Call) (*Change, error) { return Answer(c, as("bob"), true, "", now0+1000) },
			func(c *Call) (*Change, error) { return Answer(c, as("carol"), false, "", now0+2000) },
			func(c *Call) (*Change, error) {
				ch, _, err := Cancel(c, as("alice"), CancelInput{Invitees: []string{"dave"}}, now0+3000)
				return ch, err
			},
			func(c *Call) (*Change, error) {
				return Expire(c, Deadline{CallID: c.ID, UserID: "erin", Kind: DeadlineTimeout}, now0+90_000), nil
			},
		}
		for i, step := range steps {
			ch, err := step(c)
			c = mustChange(t, ch, err)
			if c.State != CallStarted {
				t.Fatalf("step %d ended the call", i)
			}
			wantStarted(t, ch)
		}
		wantStates(t, c, map[string]UserState{"alice": StateAccepted, "bob": StateAccepted, "carol": StateRejected, "dave": StateCancelled, "erin": StateTimeout})
	})
	t.Run("it ends with reason empty when everyone quit", func(t *testing.T) {
		_, c := newCall(t, ModeAdvanced, InviteInput{}, "bob", "carol")
		ch, err := Answer(c, as("bob"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		ch, err = Answer(c, as("carol"), false, "", now0+2000)
		c = mustChange(t, ch, err)
		ch, err = Quit(c, as("alice"), LeaveInput{}, now0+3000)
		c = mustChange(t, ch, err)
		wantStarted(t, ch)
		ch, err = Quit(c, as("bob"), LeaveInput{}, now0+4000)
		mustChange(t, ch, err)
		wantEnded(t, ch, now0+4000, EndEmpty)
		if evs := eventsOf(ch, EventEnded); len(evs) != 0 {
			t.Errorf("callInvitationEnded sent to %v; it is sent on end only", recipientsOf(evs))
		}
	})
	t.Run("a pending invitee keeps it open after everyone quit, and its timeout ends it with reason empty", func(t *testing.T) {
		_, c := newCall(t, ModeAdvanced, InviteInput{}, "bob")
		ch, err := Quit(c, as("alice"), LeaveInput{}, now0+1000)
		c = mustChange(t, ch, err)
		wantStarted(t, ch)
		ch = Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineTimeout}, now0+90_000)
		mustChange(t, ch, nil)
		wantEnded(t, ch, now0+90_000, EndEmpty)
	})
	t.Run("end keeps user states, ends the call with reason end and clears every timer", func(t *testing.T) {
		_, c := newCall(t, ModeAdvanced, InviteInput{EnableNotReceivedCheck: true}, "bob", "carol", "dave", "erin")
		ch := Delivered(c, "erin", 0, now0+500)
		c = mustChange(t, ch, nil)
		ch, err := Answer(c, as("bob"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		ch, err = Answer(c, as("dave"), false, "", now0+2000)
		c = mustChange(t, ch, err)
		c.CallerOfflineAt = now0 + 99_000 // a stale caller-offline timer must go too
		const now = now0 + 3000
		ch, err = End(c, as("bob"), LeaveInput{ExtendedData: "bye"}, now)
		after := mustChange(t, ch, err)
		wantStates(t, after, map[string]UserState{"alice": StateAccepted, "bob": StateAccepted, "carol": StateInviting, "dave": StateRejected, "erin": StateReceived})
		wantEnded(t, ch, now, EndByEnd)
		if h := endedHook(t, ch); h.OperatedUserID != "bob" {
			t.Errorf("call.ended operatedUserID %q, want bob", h.OperatedUserID)
		}
		if evs := eventsOf(ch, EventUserStateChanged); len(evs) != 0 {
			t.Errorf("end sent callUserStateChanged to %v, but no user state changed", recipientsOf(evs))
		}
		// Nothing moves an ended call any more.
		wantCode(t, errOf(Answer(after, as("carol"), true, "", now+1)), CodeCallEnded)
		if ch := Expire(after, Deadline{CallID: c.ID, UserID: "carol", Kind: DeadlineTimeout}, now0+90_000); ch != nil && (len(ch.Events) > 0 || ch.Call.User("carol").State != StateInviting) {
			t.Errorf("a timeout on an ended call changed it: events %v", ch.Events)
		}
		if ch := Delivered(after, "carol", 0, now+1); ch != nil {
			t.Errorf("delivery on an ended call changed it: %+v", ch)
		}
	})
}

func errOf(_ *Change, err error) error { return err }

func TestMaxCallUsers(t *testing.T) {
	cfg := testCfg
	cfg.MaxCallUsers = 4
	t.Run("invitees beyond the limit come back with call_full", func(t *testing.T) {
		ch, errUsers, err := NewCall("call0123456789abcdef", as("alice"),
			InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol", "dave", "erin", "frank"}}, now0, cfg, false, nil)
		c := mustChange(t, ch, err)
		want := []ErrorUser{{UserID: "erin", Reason: ReasonCallFull}, {UserID: "frank", Reason: ReasonCallFull}}
		if !reflect.DeepEqual(errUsers, want) {
			t.Errorf("errorUserList %v, want %v", errUsers, want)
		}
		if len(c.Users) != 4 || c.User("erin") != nil || c.User("frank") != nil {
			t.Errorf("call has %d users (%v), want alice, bob, carol, dave", len(c.Users), c.Info().CallUserList)
		}
		if got := recipientsOf(eventsOf(ch, EventReceived)); !slices.Equal(got, []string{"bob", "carol", "dave"}) {
			t.Errorf("callInvitationReceived sent to %v, want bob, carol, dave", got)
		}
	})
	t.Run("callingInvite counts everyone ever in the list, but re-inviting a member needs no room", func(t *testing.T) {
		ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: ModeAdvanced, Invitees: []string{"bob", "carol", "dave"}}, now0, cfg, false, nil)
		c := mustChange(t, ch, err)
		ch, err = Answer(c, as("bob"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		ch, err = Answer(c, as("carol"), false, "", now0+2000)
		c = mustChange(t, ch, err)
		ch, errUsers, err := CallingInvite(c, as("bob"), CallingInviteInput{Invitees: []string{"gina", "carol"}}, now0+3000, cfg, nil)
		c = mustChange(t, ch, err)
		if want := []ErrorUser{{UserID: "gina", Reason: ReasonCallFull}}; !reflect.DeepEqual(errUsers, want) {
			t.Errorf("errorUserList %v, want %v", errUsers, want)
		}
		wantStates(t, c, map[string]UserState{"carol": StateInviting})
		if c.User("gina") != nil {
			t.Error("gina was added beyond the limit")
		}
		_, err = Join(c, as("gina"), "", now0+4000, cfg)
		wantCode(t, err, CodeCallNotFound)
	})
	t.Run("a general call where every invitee was refused ends at once", func(t *testing.T) {
		small := cfg
		small.MaxCallUsers = 1
		ch, errUsers, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob"}}, now0, small, false, nil)
		mustChange(t, ch, err)
		if want := []ErrorUser{{UserID: "bob", Reason: ReasonCallFull}}; !reflect.DeepEqual(errUsers, want) {
			t.Errorf("errorUserList %v, want %v", errUsers, want)
		}
		wantEnded(t, ch, now0, EndCompleted)
	})
}

func TestCallingInviteOfExistingUsers(t *testing.T) {
	const now = now0 + 20_000
	for _, s := range []UserState{StateInviting, StateReceived, StateNotYetReceived, StateAccepted} {
		t.Run(fmt.Sprintf("a user in %s comes back with already_in_call", s), func(t *testing.T) {
			c := buildCall(ModeAdvanced, row("bob", StateAccepted, "alice"), row("carol", s, "alice"))
			before := c.Clone()
			ch, errUsers, err := CallingInvite(c, on("bob", "phone"), CallingInviteInput{Invitees: []string{"carol"}}, now, testCfg, nil)
			wantCode(t, err, ok)
			if want := []ErrorUser{{UserID: "carol", Reason: ReasonAlreadyInCall}}; !reflect.DeepEqual(errUsers, want) {
				t.Errorf("errorUserList %v, want %v", errUsers, want)
			}
			if ch != nil {
				if got := ch.Call.User("carol"); !reflect.DeepEqual(*got, *before.User("carol")) {
					t.Errorf("carol changed from %+v to %+v", *before.User("carol"), *got)
				}
				if len(ch.Events) != 0 {
					t.Errorf("events %v for an invitation that was refused", ch.Events)
				}
			}
		})
	}
	t.Run("the caller comes back with already_in_call", func(t *testing.T) {
		c := buildCall(ModeAdvanced, row("bob", StateAccepted, "alice"))
		_, errUsers, err := CallingInvite(c, on("bob", "phone"), CallingInviteInput{Invitees: []string{"alice"}}, now, testCfg, nil)
		wantCode(t, err, ok)
		if want := []ErrorUser{{UserID: "alice", Reason: ReasonAlreadyInCall}}; !reflect.DeepEqual(errUsers, want) {
			t.Errorf("errorUserList %v, want %v", errUsers, want)
		}
	})
	for _, s := range []UserState{StateRejected, StateCancelled, StateTimeout, StateQuit} {
		t.Run(fmt.Sprintf("a user in %s is invited again", s), func(t *testing.T) {
			c := buildCall(ModeAdvanced, row("bob", StateAccepted, "alice"), row("carol", s, "alice"))
			c.User("carol").ExtendedData = "earlier"
			ch, errUsers, err := CallingInvite(c, on("bob", "phone"), CallingInviteInput{Invitees: []string{"carol"}}, now, testCfg, nil)
			after := mustChange(t, ch, err)
			if len(errUsers) != 0 || errUsers == nil {
				t.Errorf("errorUserList %#v, want an empty list", errUsers)
			}
			u := after.User("carol")
			if u.State != StateInviting || u.Inviter != "bob" || u.InviteTime != now || u.UpdateTime != now || u.TimeoutAt != now+90_000 || u.MainDevice != "" {
				t.Errorf("carol after re-invite: %+v, want inviting by bob at %d, timeout at %d, no main device", *u, now, now+90_000)
			}
			if got := recipientsOf(eventsOf(ch, EventReceived)); !slices.Equal(got, []string{"carol"}) {
				t.Errorf("callInvitationReceived sent to %v, want carol", got)
			}
			if ch.Deadline != now+90_000 {
				t.Errorf("deadline %d, want %d", ch.Deadline, now+90_000)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Deadlines.

func TestNewCallArmsDeadlines(t *testing.T) {
	for _, check := range []bool{false, true} {
		t.Run(fmt.Sprintf("enableNotReceivedCheck=%v", check), func(t *testing.T) {
			ch, c := newCall(t, ModeGeneral, InviteInput{Timeout: 30, EnableNotReceivedCheck: check}, "bob", "carol")
			wantNotReceived, wantDeadline := int64(0), now0+30_000
			if check {
				wantNotReceived, wantDeadline = now0+testCfg.NotReceivedAfter.Milliseconds(), now0+5_000
			}
			for _, id := range []string{"bob", "carol"} {
				u := c.User(id)
				if u.State != StateInviting || u.TimeoutAt != now0+30_000 || u.NotReceivedAt != wantNotReceived || u.InviteTime != now0 {
					t.Errorf("%s: %+v, want inviting with timeoutAt %d, notReceivedAt %d", id, *u, now0+30_000, wantNotReceived)
				}
			}
			if u := c.User("alice"); u.State != StateAccepted || u.TimeoutAt != 0 || u.NotReceivedAt != 0 {
				t.Errorf("caller row %+v, want accepted with no timers", *u)
			}
			if ch.Deadline != wantDeadline {
				t.Errorf("change deadline %d, want the earliest, %d", ch.Deadline, wantDeadline)
			}
			if !ch.Created || c.State != CallStarted || c.CreateTime != now0 || c.EndTime != 0 {
				t.Errorf("created %v state %s createTime %d endTime %d", ch.Created, c.State, c.CreateTime, c.EndTime)
			}
		})
	}
}

func TestExpireTimeout(t *testing.T) {
	due := now0 + 90_000
	cases := []struct {
		name    string
		bob     func(u *CallUser)
		ended   bool
		now     int64
		want    UserState // bob's state after
		changed bool      // a non-nil change is expected
		events  bool
	}{
		{name: "before it is due is a no-op", now: due - 1, want: StateInviting},
		{name: "when due moves an inviting invitee to timeout", now: due, want: StateTimeout, changed: true, events: true},
		{name: "when due moves a received invitee to timeout", bob: func(u *CallUser) { u.State = StateReceived }, now: due + 5, want: StateTimeout, changed: true, events: true},
		{name: "when due moves a notYetReceived invitee to timeout", bob: func(u *CallUser) { u.State = StateNotYetReceived }, now: due, want: StateTimeout, changed: true, events: true},
		{name: "after the invitee answered is a no-op", bob: func(u *CallUser) { u.State, u.TimeoutAt = StateAccepted, 0 }, now: due, want: StateAccepted},
		{name: "after the invitee answered only clears a stale timeout column", bob: func(u *CallUser) { u.State = StateRejected }, now: due, want: StateRejected, changed: true},
		{name: "on an ended call only clears the stale column", ended: true, now: due, want: StateInviting, changed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := buildCall(ModeGeneral, row("bob", StateInviting, "alice"), row("carol", StateInviting, "alice"))
			if tc.bob != nil {
				tc.bob(c.User("bob"))
			}
			if tc.ended {
				c.State, c.EndTime = CallEnded, now0+1
			}
			before := c.Clone()
			ch := Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineTimeout, At: due}, tc.now)
			if !reflect.DeepEqual(c, before) {
				t.Error("Expire modified the call it was given")
			}
			if (ch != nil) != tc.changed {
				t.Fatalf("change %+v, want a change: %v", ch, tc.changed)
			}
			if ch == nil {
				return
			}
			u := ch.Call.User("bob")
			if u.State != tc.want {
				t.Errorf("bob is %s, want %s", u.State, tc.want)
			}
			if !tc.events {
				if len(ch.Events) != 0 || len(ch.Hooks) != 0 {
					t.Errorf("a stale deadline produced events %v hooks %v", ch.Events, hookTypes(ch))
				}
				if u.TimeoutAt != 0 || !u.Dirty() {
					t.Errorf("stale timeoutAt %d not cleared (dirty %v)", u.TimeoutAt, u.Dirty())
				}
				if c.User("carol").TimeoutAt != ch.Call.User("carol").TimeoutAt {
					t.Error("clearing bob's stale column touched carol's")
				}
				return
			}
			if u.TimeoutAt != 0 || u.UpdateTime != tc.now {
				t.Errorf("bob timeoutAt %d updateTime %d, want 0 and %d", u.TimeoutAt, u.UpdateTime, tc.now)
			}
			if got := recipientsOf(eventsOf(ch, EventTimeout)); !slices.Equal(got, []string{"bob"}) {
				t.Errorf("callInvitationTimeout sent to %v, want bob only", got)
			}
			wantStarted(t, ch) // carol is still pending
		})
	}
}

func TestExpireNotReceived(t *testing.T) {
	due := now0 + 5_000
	cases := []struct {
		name    string
		state   UserState
		now     int64
		want    UserState
		changed bool
	}{
		{name: "moves a still-inviting invitee to notYetReceived", state: StateInviting, now: due, want: StateNotYetReceived, changed: true},
		{name: "before it is due is a no-op", state: StateInviting, now: due - 1, want: StateInviting},
		{name: "after delivery only clears the stale column", state: StateReceived, now: due, want: StateReceived, changed: true},
		{name: "after an answer only clears the stale column", state: StateAccepted, now: due, want: StateAccepted, changed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bob := row("bob", tc.state, "alice")
			bob.NotReceivedAt = due
			c := buildCall(ModeGeneral, bob, row("carol", StateInviting, "alice"))
			c.NotReceivedCheck = true
			ch := Expire(c, Deadline{CallID: c.ID, UserID: "bob", Kind: DeadlineNotReceived, At: due}, tc.now)
			if (ch != nil) != tc.changed {
				t.Fatalf("change %+v, want a change: %v", ch, tc.changed)
			}
			if ch == nil {
				return
			}
			u := ch.Call.User("bob")
			if u.State != tc.want || u.NotReceivedAt != 0 {
				t.Errorf("bob %+v, want %s with notReceivedAt cleared", *u, tc.want)
			}
			if u.TimeoutAt != bob.TimeoutAt {
				t.Errorf("bob timeoutAt %d, want it kept at %d", u.TimeoutAt, bob.TimeoutAt)
			}
			changed := eventsOf(ch, EventUserStateChanged)
			if tc.want == tc.state {
				if len(ch.Events) != 0 {
					t.Errorf("a stale check produced events %v", ch.Events)
				}
				return
			}
			if len(changed) == 0 {
				t.Error("no callUserStateChanged for notYetReceived")
			}
			wantStarted(t, ch)
		})
	}
}

func TestDelivered(t *testing.T) {
	for _, s := range []UserState{StateInviting, StateNotYetReceived} {
		t.Run(fmt.Sprintf("moves a %s invitee to received", s), func(t *testing.T) {
			bob := row("bob", s, "alice")
			if s == StateInviting {
				bob.NotReceivedAt = now0 + 5_000
			}
			c := buildCall(ModeGeneral, bob)
			ch := Delivered(c, "bob", 0, now0+100)
			after := mustChange(t, ch, nil)
			u := after.User("bob")
			if u.State != StateReceived || u.UpdateTime != now0+100 || u.NotReceivedAt != 0 || u.TimeoutAt != bob.TimeoutAt {
				t.Errorf("bob %+v, want received at %d, no notReceived check, timeout kept", *u, now0+100)
			}
			if len(eventsOf(ch, EventUserStateChanged)) == 0 {
				t.Error("no callUserStateChanged for received")
			}
		})
	}
	for _, s := range []UserState{StateReceived, StateAccepted, StateRejected, StateCancelled, StateTimeout, StateQuit} {
		t.Run(fmt.Sprintf("is a no-op for a %s user", s), func(t *testing.T) {
			if ch := Delivered(buildCall(ModeAdvanced, row("bob", s, "alice")), "bob", 0, now0+100); ch != nil {
				t.Errorf("change %+v, want nil", ch)
			}
		})
	}
	t.Run("applies the report of the pending invitation", func(t *testing.T) {
		c := buildCall(ModeAdvanced, row("bob", StateInviting, "alice"))
		if ch := Delivered(c, "bob", now0, now0+100); ch == nil {
			t.Error("no change for the report of the invitation sent at InviteTime")
		}
	})
	t.Run("is a no-op for a late report of an earlier invitation", func(t *testing.T) {
		// bob was invited at now0-60s, let it time out, and was invited
		// again at now0; the report of the first comes late.
		c := buildCall(ModeAdvanced, row("bob", StateInviting, "alice"))
		if ch := Delivered(c, "bob", now0-60_000, now0+100); ch != nil {
			t.Errorf("change %+v, want nil: the new invitation was not delivered", ch)
		}
	})
	t.Run("is a no-op on an ended call", func(t *testing.T) {
		if ch := Delivered(endedCopy(buildCall(ModeAdvanced, row("bob", StateInviting, "alice"))), "bob", 0, now0+100); ch != nil {
			t.Errorf("change %+v, want nil", ch)
		}
	})
	t.Run("is a no-op for a user not in the call", func(t *testing.T) {
		if ch := Delivered(buildCall(ModeAdvanced, row("bob", StateInviting, "alice")), "eve", 0, now0+100); ch != nil {
			t.Errorf("change %+v, want nil", ch)
		}
	})
}

func TestCallerOffline(t *testing.T) {
	grace := testCfg.HeartbeatTimeout
	offAt := now0 + 1000
	due := offAt + grace.Milliseconds()
	for _, mode := range []Mode{ModeGeneral, ModeAdvanced} {
		t.Run(fmt.Sprintf("%s call: the grace runs out, every pending invitee is cancelled and the call ends with reason caller_offline", mode), func(t *testing.T) {
			ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Mode: mode, Invitees: []string{"bob", "carol", "dave"}}, now0, testCfg, true, nil)
			c := mustChange(t, ch, err)
			ch, err = Answer(c, as("dave"), false, "", now0+500)
			c = mustChange(t, ch, err)
			ch = CallerPresence(c, false, offAt, grace)
			c = mustChange(t, ch, nil)
			if c.CallerOfflineAt != due || ch.Deadline != due {
				t.Fatalf("callerOfflineAt %d deadline %d, want %d", c.CallerOfflineAt, ch.Deadline, due)
			}
			if ch := Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: due}, due-1); ch != nil && (len(ch.Events) > 0 || ch.Call.State != CallStarted) {
				t.Errorf("the caller-offline deadline fired early: %+v", ch)
			}
			ch = Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: due}, due)
			after := mustChange(t, ch, nil)
			wantStates(t, after, map[string]UserState{"alice": StateAccepted, "bob": StateCancelled, "carol": StateCancelled, "dave": StateRejected})
			wantEnded(t, ch, due, EndCallerOffline)
			cancelled := eventsOf(ch, EventCancelled)
			if got := recipientsOf(cancelled); !slices.Equal(got, []string{"bob", "carol"}) {
				t.Errorf("callInvitationCancelled sent to %v, want bob and carol", got)
			}
			for _, e := range cancelled {
				if d := decode(t, e.Data); d["inviter"] != "alice" {
					t.Errorf("callInvitationCancelled inviter %v, want the caller alice", d["inviter"])
				}
			}
			if evs := eventsOf(ch, EventEnded); len(evs) != 0 {
				t.Errorf("callInvitationEnded sent to %v; it is sent on end only", recipientsOf(evs))
			}
		})
	}
	t.Run("nothing happens once an invitee has accepted", func(t *testing.T) {
		ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob", "carol"}}, now0, testCfg, true, nil)
		c := mustChange(t, ch, err)
		ch = CallerPresence(c, false, offAt, grace)
		c = mustChange(t, ch, nil)
		ch, err = Answer(c, as("bob"), true, "", offAt+1)
		c = mustChange(t, ch, err)
		if c.CallerOfflineAt != 0 {
			t.Errorf("callerOfflineAt %d after an invitee accepted, want 0", c.CallerOfflineAt)
		}
		if ch := CallerPresence(c, false, offAt+2, grace); ch != nil {
			t.Errorf("the caller going offline after an accept changed the call: %+v", ch)
		}
		c.CallerOfflineAt = due // a deadline that raced with the accept
		ch = Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: due}, due)
		if ch != nil {
			if len(ch.Events) != 0 || len(ch.Hooks) != 0 || ch.Call.State != CallStarted {
				t.Errorf("caller offline after an accept produced events %v hooks %v state %s", ch.Events, hookTypes(ch), ch.Call.State)
			}
			wantStates(t, ch.Call, map[string]UserState{"carol": StateInviting})
		}
	})
	t.Run("nothing happens for a caller that never had a stream", func(t *testing.T) {
		_, c := newCall(t, ModeGeneral, InviteInput{}, "bob")
		if ch := CallerPresence(c, false, offAt, grace); ch != nil && ch.Call.CallerOfflineAt != 0 {
			t.Errorf("an untracked caller got a caller-offline deadline %d", ch.Call.CallerOfflineAt)
		}
	})
	t.Run("the caller coming back within the grace keeps the call", func(t *testing.T) {
		ch, _, err := NewCall("call0123456789abcdef", as("alice"), InviteInput{Invitees: []string{"bob"}}, now0, testCfg, true, nil)
		c := mustChange(t, ch, err)
		c = mustChange(t, CallerPresence(c, false, offAt, grace), nil)
		c = mustChange(t, CallerPresence(c, true, offAt+10, grace), nil)
		if c.CallerOfflineAt != 0 || !c.CallerTracked {
			t.Errorf("callerOfflineAt %d tracked %v after coming back, want 0 and tracked", c.CallerOfflineAt, c.CallerTracked)
		}
		if ch := Expire(c, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: due}, due); ch != nil && (len(ch.Events) > 0 || ch.Call.State != CallStarted) {
			t.Errorf("a cleared caller-offline deadline fired: %+v", ch)
		}
	})
	t.Run("a caller who opens a stream while the call is pending becomes tracked", func(t *testing.T) {
		_, c := newCall(t, ModeGeneral, InviteInput{}, "bob")
		c = mustChange(t, CallerPresence(c, true, offAt, grace), nil)
		if !c.CallerTracked {
			t.Fatal("caller not tracked after opening a stream")
		}
		c = mustChange(t, CallerPresence(c, false, offAt+10, grace), nil)
		if c.CallerOfflineAt != offAt+10+grace.Milliseconds() {
			t.Errorf("callerOfflineAt %d, want %d", c.CallerOfflineAt, offAt+10+grace.Milliseconds())
		}
	})
	t.Run("a stream opened once nobody is pending does not start tracking", func(t *testing.T) {
		// A backend's advanced call whose invitee rejected: its caller
		// opening a stream for another reason must not make the call end
		// as caller_offline when that stream closes.
		c := buildCall(ModeAdvanced, row("bob", StateRejected, "alice"))
		if ch := CallerPresence(c, true, offAt, grace); ch != nil {
			t.Fatalf("tracking started with nobody pending: %+v", ch.Call)
		}
		if ch := CallerPresence(c, false, offAt+10, grace); ch != nil {
			t.Fatalf("an untracked call was armed: %+v", ch.Call)
		}
	})
}

// Of an accept and a cancel racing for one invitee, exactly one wins and the
// other gets 409, whichever order the store serializes them in.
func TestAcceptCancelRace(t *testing.T) {
	t.Run("cancel first: the accept is invalid_state", func(t *testing.T) {
		_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol")
		ch, _, err := Cancel(c, as("alice"), CancelInput{Invitees: []string{"bob"}}, now0+1000)
		c = mustChange(t, ch, err)
		_, err = Answer(c, as("bob"), true, "", now0+1000)
		wantCode(t, err, CodeInvalidState)
	})
	t.Run("accept first: the cancel naming the invitee is invalid_state", func(t *testing.T) {
		_, c := newCall(t, ModeGeneral, InviteInput{}, "bob", "carol")
		ch, err := Answer(c, as("bob"), true, "", now0+1000)
		c = mustChange(t, ch, err)
		_, _, err = Cancel(c, as("alice"), CancelInput{Invitees: []string{"bob"}}, now0+1000)
		wantCode(t, err, CodeInvalidState)
	})
}

// DueDeadlines lists what Expire would fire at now, in the order the
// deadlines fell due: what an action fires first when the scheduler lags.
func TestDueDeadlines(t *testing.T) {
	due := now0 + 90_000
	timeout := func(user string, at int64) Deadline {
		return Deadline{CallID: "call0123456789abcdef", UserID: user, Kind: DeadlineTimeout, At: at}
	}
	cases := []struct {
		name  string
		setup func(c *Call)
		now   int64
		want  []Deadline
	}{
		{name: "nothing before it is due", now: due - 1},
		{name: "each pending invitee's timeout, in the call's order", now: due,
			want: []Deadline{timeout("bob", due), timeout("carol", due)}},
		{name: "the earliest first", setup: func(c *Call) { c.User("carol").TimeoutAt = now0 + 50_000 }, now: due,
			want: []Deadline{timeout("carol", now0+50_000), timeout("bob", due)}},
		{name: "a received invitee's timeout too", setup: func(c *Call) { c.User("bob").State = StateReceived }, now: due,
			want: []Deadline{timeout("bob", due), timeout("carol", due)}},
		{name: "not an answered invitee's", setup: func(c *Call) { u := c.User("bob"); u.State, u.TimeoutAt = StateRejected, 0 }, now: due,
			want: []Deadline{timeout("carol", due)}},
		{name: "the not-received check before the timeout", setup: func(c *Call) { c.User("bob").NotReceivedAt = now0 + 5_000 }, now: due,
			want: []Deadline{{CallID: "call0123456789abcdef", UserID: "bob", Kind: DeadlineNotReceived, At: now0 + 5_000}, timeout("bob", due), timeout("carol", due)}},
		{name: "the not-received check only while inviting", setup: func(c *Call) {
			u := c.User("bob")
			u.State, u.NotReceivedAt = StateReceived, now0+5_000
		}, now: now0 + 6_000},
		{name: "the caller's offline grace", setup: func(c *Call) { c.CallerOfflineAt = now0 + 30_000 }, now: now0 + 30_000,
			want: []Deadline{{CallID: "call0123456789abcdef", Kind: DeadlineCallerOffline, At: now0 + 30_000}}},
		{name: "not a grace the rule no longer watches", setup: func(c *Call) {
			c.CallerOfflineAt = now0 + 30_000
			u := c.User("bob")
			u.State, u.TimeoutAt, u.AcceptTime = StateAccepted, 0, now0+1
		}, now: now0 + 30_000},
		{name: "nothing of an ended call", setup: func(c *Call) { c.State, c.EndTime = CallEnded, now0+1 }, now: due},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := buildCall(ModeGeneral, row("bob", StateInviting, "alice"), row("carol", StateInviting, "alice"))
			if tc.setup != nil {
				tc.setup(c)
			}
			if got := DueDeadlines(c, tc.now); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DueDeadlines = %+v, want %+v", got, tc.want)
			}
		})
	}
}
