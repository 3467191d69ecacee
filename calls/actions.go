package calls

import (
	"cmp"
	"slices"
	"time"
)

// NewCall is the transition that creates a call: the caller is accepted,
// each invitee is inviting with its timers armed. callerOnline says whether
// the caller has a stream open now (then the caller-offline rule applies);
// busy holds the invitees accepted in another started call (see busy.go).
func NewCall(id string, actor Actor, in InviteInput, now int64, cfg Config, callerOnline bool, busy Busy) (*Change, []ErrorUser, error) {
	if in.Mode == "" {
		in.Mode = ModeGeneral
	}
	if in.Timeout == 0 {
		in.Timeout = DefaultTimeout
	}
	err := firstErr(
		checkInvitees("invitees", in.Invitees, 1, actor.UserID),
		checkExtendedData("extendedData", in.ExtendedData),
		checkPushConfig(in.PushConfig),
		checkBusyPolicy(in.BusyPolicy),
	)
	switch {
	case err != nil:
		return nil, nil, err
	case in.Mode != ModeGeneral && in.Mode != ModeAdvanced:
		return nil, nil, invalid("mode", "must be general or advanced, got %q", in.Mode)
	case in.Timeout < 1 || in.Timeout > MaxTimeout:
		return nil, nil, invalid("timeout", "must be 1 to %d seconds, got %d", MaxTimeout, in.Timeout)
	}
	call := &Call{
		ID: id, Caller: actor.UserID, Mode: in.Mode, State: CallStarted, Timeout: in.Timeout,
		ExtendedData: in.ExtendedData, CreateTime: now, NotReceivedCheck: in.EnableNotReceivedCheck,
		CallerTracked: callerOnline,
		Users: []*CallUser{{
			UserID: actor.UserID, State: StateAccepted, Inviter: actor.UserID, ExtendedData: in.ExtendedData,
			UpdateTime: now, AcceptTime: now, dirty: true,
		}},
	}
	t := &transition{ch: &Change{Call: call, Created: true, now: now}, call: call, now: now, callDirty: true}
	invited, errUsers := t.invite(actor.UserID, in.Invitees, cfg, in.BusyPolicy, busy)
	info := call.Info()
	t.emit(EventCreated, createdData{
		CallID: id, Caller: call.Caller, Mode: call.Mode, Timeout: call.Timeout, CreateTime: now,
		ExtendedData: call.ExtendedData, CallUserList: info.CallUserList,
	}, actor.UserID)
	t.emitReceived(actor.UserID, invited)
	t.hook(HookCallCreated, info)
	t.requestPush(PushInvitation, in.PushConfig, invited)
	t.finish(actor.UserID, "") // only when every invitee was refused (a tiny MaxCallUsers)
	return t.ch, errUsers, nil
}

// invite adds or re-invites users; used by NewCall and CallingInvite. Users
// already pending or in the call, busy users under BusyReject, and users
// beyond the call's size limit come back in the error list, checked in that
// order (a refused busy user takes no place in the call). Busy users who
// are invited are recorded in the change's BusyUsers.
func (t *transition) invite(inviter string, ids []string, cfg Config, policy BusyPolicy, busy Busy) (invited []string, errUsers []ErrorUser) {
	errUsers = []ErrorUser{}
	t.ch.BusyUsers = []string{}
	for _, id := range ids {
		u := t.call.User(id)
		switch {
		case u != nil && u.State.Active():
			errUsers = append(errUsers, ErrorUser{UserID: id, Reason: ReasonAlreadyInCall})
			continue
		case busy[id] && policy == BusyReject:
			errUsers = append(errUsers, ErrorUser{UserID: id, Reason: ReasonBusy})
			continue
		case u == nil && len(t.call.Users) >= cfg.MaxCallUsers:
			errUsers = append(errUsers, ErrorUser{UserID: id, Reason: ReasonCallFull})
			continue
		case u == nil:
			u = &CallUser{UserID: id}
			t.call.Users = append(t.call.Users, u)
		}
		if u.MissedTime == 0 && (u.State == StateRejected || acceptedUnsettled(t.call, u)) {
			// An answer a node of a version before 0ead6cf saved, which
			// left call.missed unsettled (see acceptedUnsettled): this
			// invitation erases its trace (a join's AcceptTime below, a
			// rejection's state), so it settles it first.
			t.answered(u)
		}
		if u.Inviter == u.UserID {
			// He joined uninvited and is invited now: his join's AcceptTime
			// would count as an accepted invitation (anyInviteeAccepted)
			// and switch the caller-offline rule off before he answers.
			u.AcceptTime = 0
		}
		t.setState(u, StateInviting)
		u.Inviter, u.InviteTime, u.MainDevice = inviter, t.now, ""
		u.TimeoutAt = t.now + int64(t.call.Timeout)*1000
		t.arm(u.TimeoutAt)
		if t.call.NotReceivedCheck {
			u.NotReceivedAt = t.now + cfg.NotReceivedAfter.Milliseconds()
			t.arm(u.NotReceivedAt)
		}
		invited = append(invited, id)
		if busy[id] {
			t.ch.BusyUsers = append(t.ch.BusyUsers, id)
		}
	}
	return invited, errUsers
}

func (t *transition) emitReceived(inviter string, invited []string) {
	if len(invited) == 0 {
		return
	}
	c := t.call
	t.emit(EventReceived, receivedData{
		CallID: c.ID, Caller: c.Caller, Inviter: inviter, Mode: c.Mode, Timeout: c.Timeout,
		CreateTime: c.CreateTime, ExtendedData: c.ExtendedData, CallUserList: c.Info().CallUserList,
	}, invited...)
}

// Cancel withdraws pending invitations the actor sent. It returns the named
// invitees that could not be cancelled.
func Cancel(call *Call, actor Actor, in CancelInput, now int64) (*Change, []string, error) {
	if _, err := member(call, actor.UserID); err != nil {
		return nil, nil, err
	}
	if call.State == CallEnded {
		return nil, nil, errorf(CodeCallEnded, "call %s has ended", call.ID)
	}
	if err := firstErr(checkInvitees("invitees", in.Invitees, 0, actor.UserID), checkExtendedData("extendedData", in.ExtendedData), checkPushConfig(in.PushConfig)); err != nil {
		return nil, nil, err
	}
	t := begin(call, now)
	var targets []*CallUser
	errInvitees := []string{}
	mine := false
	if len(in.Invitees) == 0 {
		// "All mine still pending": forbidden to one who invited nobody;
		// to an inviter whose invitations were all answered meanwhile (an
		// accept that won the race), 409 as for a named one.
		for _, u := range t.call.Users {
			if u.Inviter == actor.UserID && u.UserID != actor.UserID {
				mine = true
				if u.State.Pending() {
					targets = append(targets, u)
				}
			}
		}
	} else {
		for _, id := range in.Invitees {
			u := t.call.User(id)
			if u == nil || u.Inviter != actor.UserID || u.UserID == actor.UserID {
				errInvitees = append(errInvitees, id)
				continue
			}
			mine = true
			if !u.State.Pending() {
				errInvitees = append(errInvitees, id)
				continue
			}
			targets = append(targets, u)
		}
	}
	switch {
	case !mine && len(in.Invitees) == 0:
		return nil, nil, errorf(CodeForbidden, "you invited no one in this call")
	case !mine:
		return nil, nil, errorf(CodeForbidden, "you did not invite these users")
	case len(targets) == 0 && len(in.Invitees) == 0:
		return nil, nil, errorf(CodeInvalidState, "none of your invitations is pending any more")
	case len(targets) == 0:
		return nil, nil, errorf(CodeInvalidState, "none of these invitations is pending any more")
	}
	t.cancel(targets, in.ExtendedData, in.PushConfig, MissedCancelled)
	t.finish(actor.UserID, "")
	return t.done(), errInvitees, nil
}

// cancel withdraws pending invitations; why is the call.missed reason
// (cancelled by the inviter, or because the caller went offline). Each
// invitee's callInvitationCancelled names the inviter its
// callInvitationReceived named, so an app can match the two: a cancel
// withdraws only the actor's own invitations, but the caller-offline rule
// withdraws those of everyone in the call.
func (t *transition) cancel(targets []*CallUser, ext string, push *PushConfig, why MissedReason) {
	ids := make([]string, len(targets))
	var inviters []string
	for i, u := range targets {
		t.setState(u, StateCancelled)
		ids[i] = u.UserID
		if !slices.Contains(inviters, u.Inviter) {
			inviters = append(inviters, u.Inviter)
		}
	}
	for _, inviter := range inviters {
		var to []string
		for _, u := range targets {
			if u.Inviter == inviter {
				to = append(to, u.UserID)
			}
		}
		t.emit(EventCancelled, cancelledData{CallID: t.call.ID, Inviter: inviter, Mode: t.call.Mode, ExtendedData: ext}, to...)
	}
	t.stateChanged(targets...)
	for _, u := range targets {
		t.missed(u, why)
	}
	t.requestPush(PushCancellation, push, ids)
}

// Answer accepts (accept=true) or rejects the actor's pending invitation.
// Accepting makes the actor's device its main device for the call.
func Answer(call *Call, actor Actor, accept bool, ext string, now int64) (*Change, error) {
	action, state := "reject", StateRejected
	if accept {
		action, state = "accept", StateAccepted
	}
	u, err := member(call, actor.UserID)
	if err != nil {
		return nil, err
	}
	if err := firstErr(checkAction(call, u, false, UserState.Pending, action), checkExtendedData("extendedData", ext)); err != nil {
		return nil, err
	}
	t := begin(call, now)
	u = t.call.User(actor.UserID)
	t.setState(u, state)
	u.ExtendedData = ext
	if accept {
		t.becomeMain(u, actor.Device)
	}
	t.stateChanged(u)
	t.finish(actor.UserID, "")
	return t.done(), nil
}

func (t *transition) becomeMain(u *CallUser, device string) {
	u.MainDevice = device
	if t.announced == nil {
		t.announced = map[string]bool{}
	}
	t.announced[u.UserID] = true
}

// CallingInvite invites more users into an advanced call from a member who
// is in it; busy is as for NewCall.
func CallingInvite(call *Call, actor Actor, in CallingInviteInput, now int64, cfg Config, busy Busy) (*Change, []ErrorUser, error) {
	u, err := member(call, actor.UserID)
	if err != nil {
		return nil, nil, err
	}
	if err := firstErr(checkAction(call, u, true, isAccepted, "invite"), checkInvitees("invitees", in.Invitees, 1, ""), checkPushConfig(in.PushConfig), checkBusyPolicy(in.BusyPolicy)); err != nil {
		return nil, nil, err
	}
	t := begin(call, now)
	invited, errUsers := t.invite(actor.UserID, in.Invitees, cfg, in.BusyPolicy, busy)
	t.emitReceived(actor.UserID, invited)
	changed := make([]*CallUser, len(invited))
	for i, id := range invited {
		changed[i] = t.call.User(id)
	}
	t.stateChanged(changed...)
	t.requestPush(PushInvitation, in.PushConfig, invited)
	return t.done(), errUsers, nil
}

// Join puts the actor into an advanced call, or moves its main device to
// actor.Device when it is already in from another device. Anyone holding
// the callID of an advanced call may join it while there is room; past
// that, one not in the list gets call_not_found, as the contract has it.
func Join(call *Call, actor Actor, ext string, now int64, cfg Config) (*Change, error) {
	u := call.User(actor.UserID)
	switch {
	case u == nil && call.Mode != ModeAdvanced:
		return nil, ErrCallNotFound
	case u == nil && len(call.Users) >= cfg.MaxCallUsers:
		// The contract's "a user who is not in the call and may not join
		// it": 404, the very answer for an unknown call, so an outsider
		// learns nothing of this one, not even that it has ended.
		return nil, ErrCallNotFound
	case call.State == CallEnded:
		return nil, errorf(CodeCallEnded, "call %s has ended", call.ID)
	case call.Mode != ModeAdvanced:
		return nil, errorf(CodeWrongMode, "join needs an advanced-mode call")
	case u != nil && u.State == StateAccepted && u.MainDevice == actor.Device:
		return nil, errorf(CodeAlreadyInCall, "already in the call on device %q", actor.Device)
	}
	if err := checkExtendedData("extendedData", ext); err != nil {
		return nil, err
	}
	t := begin(call, now)
	u = t.call.User(actor.UserID)
	if u == nil {
		// Nobody invited a user who joins on their own: like the caller, it
		// is its own inviter.
		u = &CallUser{UserID: actor.UserID, Inviter: actor.UserID}
		t.call.Users = append(t.call.Users, u)
	}
	u.ExtendedData = ext
	if u.State == StateAccepted {
		// A device switch: only the user's own devices hear of it.
		u.dirty = true
		t.becomeMain(u, actor.Device)
		t.emit(EventUserStateChanged, userStateChangedData{CallID: call.ID, CallUserList: []CallUserInfo{u.Info()}}, u.UserID)
		return t.ch, nil
	}
	t.setState(u, StateAccepted)
	t.becomeMain(u, actor.Device)
	t.stateChanged(u)
	return t.ch, nil
}

// Quit takes the actor out of an advanced call; the call ends when nobody
// is left in it or invited to it.
func Quit(call *Call, actor Actor, in LeaveInput, now int64) (*Change, error) {
	u, err := member(call, actor.UserID)
	if err != nil {
		return nil, err
	}
	if err := firstErr(checkAction(call, u, true, isAccepted, "quit"), checkExtendedData("extendedData", in.ExtendedData), checkPushConfig(in.PushConfig)); err != nil {
		return nil, err
	}
	t := begin(call, now)
	u = t.call.User(actor.UserID)
	t.setState(u, StateQuit)
	u.ExtendedData = in.ExtendedData
	t.stateChanged(u)
	t.requestPush(PushEnd, in.PushConfig, t.audience(actor.UserID))
	t.finish(actor.UserID, "")
	return t.ch, nil
}

// End ends an advanced call for everyone; user states stay as they are.
func End(call *Call, actor Actor, in LeaveInput, now int64) (*Change, error) {
	u, err := member(call, actor.UserID)
	if err != nil {
		return nil, err
	}
	if err := firstErr(checkAction(call, u, true, isAccepted, "end"), checkExtendedData("extendedData", in.ExtendedData), checkPushConfig(in.PushConfig)); err != nil {
		return nil, err
	}
	t := begin(call, now)
	to := t.audience("")
	t.end(actor.UserID, EndByEnd)
	t.emit(EventEnded, endedData{
		CallID: call.ID, Caller: call.Caller, OperatedUserID: actor.UserID, Mode: call.Mode, EndTime: t.now, ExtendedData: in.ExtendedData,
	}, to...)
	t.requestPush(PushEnd, in.PushConfig, t.audience(actor.UserID))
	return t.ch, nil
}

// audience lists the users pending or in the call, except one.
func (t *transition) audience(except string) []string {
	var ids []string
	for _, u := range t.call.Users {
		if u.State.Active() && u.UserID != except {
			ids = append(ids, u.UserID)
		}
	}
	return ids
}

// Delivered moves an invitee whose invitation reached one of its streams to
// received. Anything else is a no-op (nil change): delivery is reported for
// every flushed invitation, including ones already answered. invitedAt is
// the delivered invitation's event time (0: not known): a report about an
// earlier invitation (one the invitee answered or let time out, and was
// invited again since in the same call) is late and says nothing about the
// new one, which may not have reached any device yet.
func Delivered(call *Call, userID string, invitedAt, now int64) *Change {
	u := call.User(userID)
	if call.State == CallEnded || u == nil || (u.State != StateInviting && u.State != StateNotYetReceived) {
		return nil
	}
	if invitedAt != 0 && invitedAt < u.InviteTime {
		return nil
	}
	t := begin(call, now)
	u = t.call.User(userID)
	t.setState(u, StateReceived)
	t.stateChanged(u)
	return t.ch
}

// DueDeadlines lists the deadlines of call that Expire fires at now, in
// the order they fell due. The scheduler fires them late when it lags (a
// restart, many falling due at once); an action on the call fires them
// first (Service.settle), so that, say, an invitation past its timeout is
// no longer accepted.
func DueDeadlines(call *Call, now int64) []Deadline {
	if call.State == CallEnded {
		return nil
	}
	now = max(now, call.latestTime()) // as the transition sees it (begin)
	var due []Deadline
	for _, u := range call.Users {
		if u.State == StateInviting && u.NotReceivedAt != 0 && u.NotReceivedAt <= now {
			due = append(due, Deadline{CallID: call.ID, UserID: u.UserID, Kind: DeadlineNotReceived, At: u.NotReceivedAt})
		}
		if u.State.Pending() && u.TimeoutAt != 0 && u.TimeoutAt <= now {
			due = append(due, Deadline{CallID: call.ID, UserID: u.UserID, Kind: DeadlineTimeout, At: u.TimeoutAt})
		}
	}
	if call.CallerOfflineAt != 0 && call.CallerOfflineAt <= now && CallerOfflineApplies(call) {
		due = append(due, Deadline{CallID: call.ID, Kind: DeadlineCallerOffline, At: call.CallerOfflineAt})
	}
	// Stable: a user's not-received check before its timeout at the same
	// instant, users in the call's order.
	slices.SortStableFunc(due, func(a, b Deadline) int { return cmp.Compare(a.At, b.At) })
	return due
}

// Expire fires one due deadline. It is idempotent: a deadline that lost a
// race (the invitee answered, the caller came back) only clears itself.
func Expire(call *Call, d Deadline, now int64) *Change {
	return expire(call, d, now, 0)
}

// expire is Expire, with the grace the service arms the caller-offline
// timer with. A caller-offline grace that ends while the call goes on (a
// user who joined uninvited is in it: the rule cancels the pending
// invitations, and finish keeps the call for him) is armed again, grace
// from now: the rule is a standing one ("if no one but the caller is left
// in accepted, it ends"), and checked only at its firing it let the call,
// once he quit, stay started for as long as its caller stayed away (and
// him busy), and the invitations made meanwhile ring. A caller back in
// time clears it (CallerPresence); grace 0 arms nothing (the tests of the
// pure firing).
func expire(call *Call, d Deadline, now int64, grace time.Duration) *Change {
	t := begin(call, now)
	c := t.call
	if c.State == CallEnded {
		return t.clearStale(d)
	}
	switch d.Kind {
	case DeadlineTimeout:
		u := c.User(d.UserID)
		if u == nil || !u.State.Pending() || u.TimeoutAt == 0 || u.TimeoutAt > t.now {
			return t.clearStale(d)
		}
		t.setState(u, StateTimeout)
		t.emit(EventTimeout, timeoutData{CallID: c.ID, Mode: c.Mode}, u.UserID)
		t.stateChanged(u)
		t.missed(u, MissedTimeout)
		t.finish(u.UserID, "")
	case DeadlineNotReceived:
		u := c.User(d.UserID)
		if u == nil || u.State != StateInviting || u.NotReceivedAt == 0 || u.NotReceivedAt > t.now {
			return t.clearStale(d)
		}
		t.setState(u, StateNotYetReceived)
		t.stateChanged(u)
	case DeadlineCallerOffline:
		if c.CallerOfflineAt == 0 || c.CallerOfflineAt > t.now || !CallerOfflineApplies(c) {
			return t.clearStale(d)
		}
		c.CallerOfflineAt, t.callDirty = 0, true
		var pending []*CallUser
		for _, u := range c.Users {
			if u.State.Pending() {
				pending = append(pending, u)
			}
		}
		if len(pending) > 0 {
			t.cancel(pending, "", nil, MissedCallerOffline)
		}
		t.finish(c.Caller, EndCallerOffline)
		if c.State == CallStarted && grace > 0 && CallerOfflineApplies(c) {
			// At most once a second: a grace of a millisecond (the config
			// allows it) would otherwise rewrite the call a thousand
			// times a second while its caller stays away.
			c.CallerOfflineAt = t.now + max(grace, time.Second).Milliseconds()
			t.arm(c.CallerOfflineAt)
		}
	}
	return t.done()
}

// clearStale zeroes a deadline that fired but no longer applies, so the
// scheduler does not see it again.
func (t *transition) clearStale(d Deadline) *Change {
	c := t.call
	switch d.Kind {
	case DeadlineCallerOffline:
		if c.CallerOfflineAt != 0 && (c.CallerOfflineAt <= t.now || !CallerOfflineApplies(c)) {
			c.CallerOfflineAt, t.callDirty = 0, true
		}
	case DeadlineTimeout, DeadlineNotReceived:
		if u := c.User(d.UserID); u != nil {
			if d.Kind == DeadlineTimeout && u.TimeoutAt != 0 && (u.TimeoutAt <= t.now || !u.State.Pending() || c.State == CallEnded) {
				u.TimeoutAt, u.dirty = 0, true
			}
			if d.Kind == DeadlineNotReceived && u.NotReceivedAt != 0 && (u.NotReceivedAt <= t.now || u.State != StateInviting || c.State == CallEnded) {
				u.NotReceivedAt, u.dirty = 0, true
			}
		}
	}
	return t.done()
}

// anyInviteeAccepted reports whether some invitee of c has ever accepted,
// the "no invitee has accepted" of the contract's caller-offline rule. An
// invitee is a user someone invited: a user who joined without an
// invitation is his own inviter (Join), as the caller is, and is no
// invitee, so his join does not switch the rule off. A user who was
// invited and then accepted, or joined instead of accepting (pending, or
// after rejecting), counts, whoever invited him; so does a joiner who left
// and accepted a later invitation, as Inviter then names that inviter.
//
// A user who joined uninvited, left, and was then invited has his join's
// AcceptTime cleared by the invitation (invite), or it would count as an
// accepted invitation before he answers.
//
// The stores' SQL (noInviteeAccepted in db/sqlite and db/postgres) must
// select at least the calls this leaves out; see CallerOfflineApplies.
func anyInviteeAccepted(c *Call) bool {
	for _, u := range c.Users {
		if u.UserID != c.Caller && u.Inviter != u.UserID && u.AcceptTime > 0 {
			return true
		}
	}
	return false
}

// anyInviteePending reports whether some invitee still has to answer.
func anyInviteePending(c *Call) bool {
	for _, u := range c.Users {
		if u.UserID != c.Caller && u.State.Pending() {
			return true
		}
	}
	return false
}

// CallerOfflineApplies is the one predicate of the contract's "Caller
// offline" rule: the rule watches a call while it is started and no
// invitee has accepted. It does not ask for a pending invitee: an advanced
// call whose invitees all rejected or timed out still holds its caller in
// accepted, and a caller gone for good would otherwise keep it (and stay
// busy) forever; the rule ends it, as "if no one but the caller is left in
// accepted, it ends" says. Arming at start, arming when the caller's last
// stream closes, clearing when a stream opens and firing (Expire) all use
// this predicate, so a call armed by one path is always cleared by another.
// A user who joined uninvited is no invitee (anyInviteeAccepted): the rule
// still cancels the pending invitations, and the call goes on with him
// (finish).
func CallerOfflineApplies(c *Call) bool {
	return c.State == CallStarted && !anyInviteeAccepted(c)
}

// PresenceMatters reports whether the caller's presence can change c: the
// caller-offline rule applies, and the call is tracked, armed, or has an
// invitee pending (a caller coming online then tracks it). An untracked
// call whose invitees have all answered can never be changed by presence
// (it ends by its members), and the stores leave such calls out of
// CallerOfflineCalls: an advanced call created by a backend whose invitees
// all timed out keeps its caller in accepted, and stays started until
// someone ends it, so one user could pile up thousands that every stream
// open and close would otherwise read through the writer.
func PresenceMatters(c *Call) bool {
	return CallerOfflineApplies(c) && (c.CallerTracked || c.CallerOfflineAt != 0 || anyInviteePending(c))
}

// CallerPresence applies the caller going online (tracked, timer cleared) or
// offline (timer armed at now+grace) to one of its calls the caller-offline
// rule applies to; any other call is left alone (nil).
func CallerPresence(call *Call, online bool, now int64, grace time.Duration) *Change {
	return callerPresence(call, online, now, now, grace)
}

// CallerOffline is CallerPresence for a caller whose last stream closed at
// since, reported only now: the grace runs from since (or from the call's
// creation, when later), so a report that waited (the store out of reach,
// the workers busy) does not give a gone caller that much longer. Still,
// a late report leaves at least LateOfflineLeft (or the grace, if
// shorter) before the grace ends: in a cluster the caller may have
// reconnected to another node during the outage, whose online report and
// presence row wait for the store as this report did, and a grace armed
// as already over would cancel a connected caller's calls before they
// land. One armed later is kept.
func CallerOffline(call *Call, since, now int64, grace time.Duration) *Change {
	return callerPresence(call, false, min(since, now), now, grace)
}

// LateOfflineLeft is the least of the grace a late offline report leaves
// (see CallerOffline): several times the second after which a report
// parked while the store was out of reach is tried again, plus the bound
// of a presence check.
const LateOfflineLeft = 5 * time.Second

func callerPresence(call *Call, online bool, since, now int64, grace time.Duration) *Change {
	if !CallerOfflineApplies(call) {
		return nil
	}
	t := begin(call, now)
	c := t.call
	switch {
	case online && c.CallerOfflineAt != 0: // tracked, and back in time
		c.CallerOfflineAt, t.callDirty = 0, true
	case online && !c.CallerTracked && anyInviteePending(c):
		// The contract tracks a caller that opens a stream while the call
		// is pending, not one whose invitees have all answered or timed
		// out (a backend's call stays untracked).
		c.CallerTracked, t.callDirty = true, true
	case !online && c.CallerTracked:
		// Never brought forward: a report that waited (a sweep's, retried
		// on one node while the caller came back on another and left
		// again, whose own report armed the grace from then) is stale.
		at := max(since, c.CreateTime) + grace.Milliseconds()
		at = max(at, t.now+min(grace, LateOfflineLeft).Milliseconds())
		if at > c.CallerOfflineAt {
			c.CallerOfflineAt, t.callDirty = at, true
			t.arm(at)
		}
	}
	return t.done()
}
