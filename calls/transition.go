package calls

// The state machine. Every function here is pure: it takes a call (never
// modified: transitions work on a clone), the actor, the input and `now`,
// and returns the Change (the new call plus every event it causes) or a
// domain error. No I/O, no clock, no randomness: the Service supplies IDs,
// time and presence.

// transition accumulates one Change.
type transition struct {
	ch   *Change
	call *Call
	now  int64
	// announced holds users who just chose a main device: their own
	// callUserStateChanged goes to all their devices so the others stop ringing.
	announced map[string]bool
	callDirty bool
}

// begin starts a transition of call at now, or at the call's latest time
// when now is earlier: a call's times never go back (its endTime before
// its createTime, an answer's updateTime before the invitation's, events
// of the call dated before the ones they follow), though the clock that
// gives now may be behind the one that dated the call before (another
// node's, by the skew NTP leaves; this one's, before NTP stepped it
// back). Deadlines are compared with that time too, so the transition's
// "due" agrees with the times it writes.
func begin(call *Call, now int64) *transition {
	c := call.Clone()
	now = max(now, c.latestTime())
	return &transition{ch: &Change{Call: c, now: now}, call: c, now: now}
}

// latestTime is the latest of the times call records as past: its
// creation, its end, and its users' invitations, answers and changes.
func (c *Call) latestTime() int64 {
	t := max(c.CreateTime, c.EndTime)
	for _, u := range c.Users {
		t = max(t, u.UpdateTime, u.InviteTime, u.AcceptTime)
	}
	return t
}

// setState moves u to state and keeps its deadlines consistent: a user who
// is no longer pending has no timeout, and only an inviting user can become
// notYetReceived.
func (t *transition) setState(u *CallUser, state UserState) {
	u.State = state
	u.UpdateTime = t.now
	u.dirty = true
	if !state.Pending() {
		u.TimeoutAt = 0
	}
	if state != StateInviting {
		u.NotReceivedAt = 0
	}
	if state == StateAccepted || state == StateRejected {
		t.answered(u)
	}
	if state == StateAccepted {
		u.AcceptTime = t.now
		// Once an invitee is in, the caller going offline no longer
		// cancels the call; a user who joined uninvited does not stop it.
		if t.call.CallerOfflineAt != 0 && !CallerOfflineApplies(t.call) {
			t.call.CallerOfflineAt = 0
			t.callDirty = true
		}
	}
}

// arm records a deadline the change sets, so the scheduler can be woken.
func (t *transition) arm(at int64) {
	if at > 0 && (t.ch.Deadline == 0 || at < t.ch.Deadline) {
		t.ch.Deadline = at
	}
}

// deviceFor applies the main-device rule to one recipient.
func (t *transition) deviceFor(userID string) string {
	if t.announced[userID] {
		return ""
	}
	if u := t.call.User(userID); u != nil {
		return u.MainDevice
	}
	return ""
}

// emit appends one event per recipient, sharing the encoded data.
func (t *transition) emit(typ EventType, data any, recipients ...string) {
	raw := mustJSON(data)
	for _, r := range recipients {
		t.ch.Events = append(t.ch.Events, Event{UserID: r, Device: t.deviceFor(r), CallID: t.call.ID, Type: typ, Data: raw, Time: t.now})
	}
}

func (t *transition) hook(typ HookType, data any) {
	t.ch.Hooks = append(t.ch.Hooks, HookEvent{Type: typ, CallID: t.call.ID, Data: mustJSON(data), Time: t.now})
}

// stateChanged tells the call's audience about the changed users. This is
// the single place deciding who receives callUserStateChanged: every user
// still pending or accepted, and the changed users themselves.
func (t *transition) stateChanged(changed ...*CallUser) {
	if len(changed) == 0 {
		return
	}
	list := make([]CallUserInfo, len(changed))
	isChanged := make(map[string]bool, len(changed))
	for i, u := range changed {
		list[i] = u.Info()
		isChanged[u.UserID] = true
	}
	var to []string
	for _, u := range t.call.Users {
		if u.State.Active() || isChanged[u.UserID] {
			to = append(to, u.UserID)
		}
	}
	data := userStateChangedData{CallID: t.call.ID, CallUserList: list}
	t.emit(EventUserStateChanged, data, to...)
	t.hook(HookUserStateChanged, data)
}

// finish ends the call when its mode's lifecycle says so: a general call
// once nobody is pending, an advanced call once nobody is pending or in.
// When the caller went offline (reason caller_offline) the caller does not
// count: the call ends "if no one but the caller is left in accepted", and
// goes on with a user who joined it uninvited.
func (t *transition) finish(operator string, reason EndReason) {
	if t.call.State == CallEnded {
		return
	}
	for _, u := range t.call.Users {
		if u.State.Pending() {
			return
		}
		if t.call.Mode == ModeAdvanced && u.State == StateAccepted && (reason != EndCallerOffline || u.UserID != t.call.Caller) {
			return
		}
	}
	if reason == "" {
		reason = EndCompleted
		if t.call.Mode == ModeAdvanced {
			reason = EndEmpty
		}
	}
	t.end(operator, reason)
}

// end marks the call ended and clears every timer it still had. Users
// still pending keep their state (End leaves states as they are) but their
// invitation is over: they missed the call.
func (t *transition) end(operator string, reason EndReason) {
	c := t.call
	c.State, c.EndTime, c.EndReason, c.CallerOfflineAt = CallEnded, t.now, reason, 0
	t.callDirty = true
	for _, u := range c.Users {
		if u.State.Pending() {
			t.missed(u, MissedEnded)
		}
		if u.TimeoutAt != 0 || u.NotReceivedAt != 0 {
			u.TimeoutAt, u.NotReceivedAt, u.dirty = 0, 0, true
		}
	}
	t.hook(HookCallEnded, callEndedHookData{CallID: c.ID, OperatedUserID: operator, EndTime: t.now, Reason: reason})
}

// requestPush asks for offline pushes to users (filtered by presence later).
func (t *transition) requestPush(kind PushKind, cfg *PushConfig, users []string) {
	if cfg == nil || len(users) == 0 {
		return
	}
	t.ch.push = &pushRequest{kind: kind, config: *cfg, users: users}
}

// done returns the change, or nil when nothing changed.
func (t *transition) done() *Change {
	if !t.callDirty && len(t.ch.Events) == 0 && len(t.ch.Hooks) == 0 {
		dirty := false
		for _, u := range t.call.Users {
			dirty = dirty || u.dirty
		}
		if !dirty {
			return nil
		}
	}
	return t.ch
}

// member finds the actor in the call, hiding calls the actor cannot see.
func member(c *Call, userID string) (*CallUser, error) {
	u := c.User(userID)
	if u == nil {
		return nil, ErrCallNotFound // as for an unknown call: nothing of it shows
	}
	return u, nil
}

// checkAction applies the contract's error order for an action by a member:
// ended call first, then mode, then the user's state.
func checkAction(c *Call, u *CallUser, advancedOnly bool, allowed func(UserState) bool, action string) error {
	if c.State == CallEnded {
		return errorf(CodeCallEnded, "call %s has ended", c.ID)
	}
	if advancedOnly && c.Mode != ModeAdvanced {
		return errorf(CodeWrongMode, "%s needs an advanced-mode call", action)
	}
	if !allowed(u.State) {
		return errorf(CodeInvalidState, "cannot %s while %s", action, u.State)
	}
	return nil
}

func isAccepted(s UserState) bool { return s == StateAccepted }
