package chaos

// The sequential specification of one call, written from the seed's tables
// (shared/seed/call-invitation.md: which user state allows which operation),
// the HTTP contract (lifecycle of both modes, which error in which order)
// and the error orders api/openapi.yaml documents per endpoint. It does not
// import calls/: a model copied from the code under test would agree with
// its bugs.
//
// The server also changes a call on its own: a pending invitation times out,
// an inviting invitee with enableNotReceivedCheck becomes notYetReceived,
// and an invitee with an open stream becomes received once the invitation
// is flushed to it. When those happen is up to the server's scheduler and
// delivery, so the model is nondeterministic: its state is the set of
// states the call may be in, and after every operation that set is closed
// under those moves. Time is explicit: the server runs on a fake clock
// that only moves in tick operations; a timeout or notYetReceived move is
// possible only once the clock has reached its deadline, and a time an
// answer or a read shows must lie within the clock readings around the
// request that caused it (a move the server made on its own: between its
// deadline and the read that shows it).

// The test server's limits the model must know.
const (
	maxUsers         = 4   // CALLSIG_MAX_CALL_USERS
	notReceivedAfter = 500 // ms, CALLSIG_NOT_RECEIVED_AFTER
	streamUser       = "u4"
)

// hasStream reports whether the user keeps an event stream open for the
// whole run: only such a user can become received.
func hasStream(user string) bool { return user == streamUser }

// User states (ZIMCallUserState).
const (
	inviting       = "inviting"
	received       = "received"
	notYetReceived = "notYetReceived"
	accepted       = "accepted"
	rejected       = "rejected"
	cancelled      = "cancelled"
	timedOut       = "timeout"
	quit           = "quit"
)

// pending: the invitation is unanswered (inviting, received, notYetReceived).
func pending(state string) bool {
	return state == inviting || state == received || state == notYetReceived
}

// active: pending or in the call; an active user cannot be invited again.
func active(state string) bool { return pending(state) || state == accepted }

// when is a time the model knows within bounds [lo, hi]. An operation
// happens between the clock when it was sent and the clock where it is
// linearized (the server reads its clock inside the write transaction,
// which may commit after a tick); hi == 0 marks a move the server made on
// its own, bounded only by when it is seen. A read pins it.
type when struct{ lo, hi int64 }

func exact(t int64) when { return when{t, t} }

// admits reports whether the server may have shown got for w at now.
func (w when) admits(got, now int64) bool {
	hi := w.hi
	if hi == 0 {
		hi = now
	}
	return w.lo <= got && got <= hi
}

// modelUser is one row of callUserList plus what the server keeps for it.
type modelUser struct {
	id, state, inviter, ext string
	updated                 when  // when state last changed
	invited                 when  // when the pending invitation was sent
	timeoutAt               int64 // earliest the pending invitation times out (0: none)
	notReceivedAt           int64 // earliest an inviting user becomes notYetReceived (0: never)
	acceptedAt              when  // when the user last became accepted
	device                  string
}

// callModel is one call: a partition of the history holds exactly one. It
// is a comparable value, so porcupine can compare and hash states cheaply.
type callModel struct {
	clock            int64 // the server's time (Unix ms); 0 before the first operation
	exists           bool
	caller, mode     string
	ext              string
	timeout          int // seconds
	notReceivedCheck bool
	created          int64
	ended            bool
	endTime          when
	n                int
	users            [maxUsers]modelUser
}

func (c *callModel) user(id string) *modelUser {
	for i := range c.n {
		if c.users[i].id == id {
			return &c.users[i]
		}
	}
	return nil
}

func (c *callModel) add(u modelUser) *modelUser {
	c.users[c.n] = u
	c.n++
	return &c.users[c.n-1]
}

// setState moves u at time at; a user who is no longer pending has no
// deadline left.
func setState(u *modelUser, state string, at when) {
	u.state, u.updated = state, at
	if !pending(state) {
		u.timeoutAt = 0
	}
	if state != inviting {
		u.notReceivedAt = 0
	}
	if state == accepted {
		u.acceptedAt = at
	}
}

// invite (re-)invites users: an active user is already in the call, a new
// user beyond the call's limit does not fit. Used by create and by invite
// during a call.
func (c *callModel) invite(inviter string, ids []string, at when) []errorUser {
	refused := []errorUser{}
	for _, id := range ids {
		u := c.user(id)
		switch {
		case u != nil && active(u.state):
			refused = append(refused, errorUser{UserID: id, Reason: "already_in_call"})
			continue
		case u == nil && c.n >= maxUsers:
			refused = append(refused, errorUser{UserID: id, Reason: "call_full"})
			continue
		case u == nil:
			u = c.add(modelUser{id: id})
		}
		setState(u, inviting, at)
		u.inviter = inviter
		c.invitedAt(u, at)
	}
	return refused
}

// invitedAt sets the invitation's time and the deadlines that follow
// from it.
func (c *callModel) invitedAt(u *modelUser, at when) {
	u.invited = at
	u.timeoutAt = at.lo + int64(c.timeout)*1000
	if c.notReceivedCheck {
		u.notReceivedAt = at.lo + notReceivedAfter
	}
}

// finish ends the call when its mode's lifecycle says so: a general call as
// soon as no invitee is pending, an advanced call once nobody is pending
// or accepted.
func (c *callModel) finish(at when) {
	if c.ended {
		return
	}
	for i := range c.n {
		s := c.users[i].state
		if pending(s) || (c.mode == "advanced" && s == accepted) {
			return
		}
	}
	c.end(at)
}

// end ends the call; user states stay as they are and no deadline is left.
func (c *callModel) end(at when) {
	c.ended, c.endTime = true, at
	for i := range c.n {
		c.users[i].timeoutAt, c.users[i].notReceivedAt = 0, 0
	}
}

// moves lists the states the server can reach on its own from c: one
// timeout, notYetReceived or received transition. An ended call stays as
// it is.
func (c callModel) moves() []callModel {
	if !c.exists || c.ended {
		return nil
	}
	var out []callModel
	for i := range c.n {
		u := c.users[i]
		if pending(u.state) && u.timeoutAt != 0 && u.timeoutAt <= c.clock {
			n := c
			setState(&n.users[i], timedOut, when{u.timeoutAt, 0})
			n.finish(when{u.timeoutAt, 0})
			out = append(out, n)
		}
		if u.state == inviting && u.notReceivedAt != 0 && u.notReceivedAt <= c.clock {
			n := c
			setState(&n.users[i], notYetReceived, when{u.notReceivedAt, 0})
			out = append(out, n)
		}
		if hasStream(u.id) && (u.state == inviting || u.state == notYetReceived) {
			n := c
			setState(&n.users[i], received, when{u.invited.lo, 0})
			out = append(out, n)
		}
	}
	return out
}

// callStates is the set of states a call may be in (no duplicates): the
// porcupine state of the model.
type callStates []callModel

// step is the nondeterministic step on a set: every state the call can be
// in after op, given what the server answered (none: the answer is
// impossible), closed under the server's own moves.
func step(states callStates, in callInput, out callOutput) callStates {
	seen := map[callModel]bool{}
	var next callStates
	for _, c := range states {
		if n, ok := stepOne(c, in, out); ok && !seen[n] {
			seen[n] = true
			next = append(next, n)
		}
	}
	if in.Kind == opFinal {
		return next // only settled states pass stepOne
	}
	for i := 0; i < len(next); i++ {
		for _, m := range next[i].moves() {
			if !seen[m] {
				seen[m] = true
				next = append(next, m)
			}
		}
	}
	return next
}

// stepOne applies op to one state.
//
// Ticks are operations of the history too, so porcupine tries an
// operation on either side of a concurrent tick; the clock where it is
// linearized must lie within the clock readings around the request.
// Before the first tick of a partition the clock is unknown; the create's
// createTime sets it.
func stepOne(c callModel, in callInput, out callOutput) (callModel, bool) {
	if in.Kind == opTick {
		ok := in.Now >= c.clock
		c.clock = in.Now
		return c, ok
	}
	if c.clock == 0 && in.Kind == opCreate && out.Info != nil {
		c.clock = out.Info.CreateTime
	}
	if c.clock < in.Now || c.clock > in.NowMax {
		return c, false // the server's clock cannot have shown that time during the request
	}
	next, ok := c.apply(in, out)
	if in.Kind == opFinal && len(next.moves()) > 0 {
		return c, false // after the drain the server must have done every due move
	}
	return next, ok
}

// apply runs one client operation on c and reports whether out is what
// the seed and the contract say the server answers.
func (c callModel) apply(in callInput, out callOutput) (callModel, bool) {
	at := when{in.Now, in.NowMax}
	if in.Kind == opCreate {
		return c.create(in, out, at)
	}
	if !c.exists {
		return c, false // every other operation names a call created earlier
	}
	me := c.user(in.User)
	if err := c.refusal(in, me); err != "" {
		return c, out.problem(err)
	}
	n := c
	var u *modelUser
	if me != nil {
		u = n.user(in.User)
	}
	switch in.Kind {
	case opGet, opFinal:
		if out.Status != 200 {
			return c, false
		}
		return c.observe(out.Info, in.Call)
	case opAccept, opReject:
		state := map[opKind]string{opAccept: accepted, opReject: rejected}[in.Kind]
		setState(u, state, at)
		u.ext = in.Ext
		if in.Kind == opAccept {
			u.device = in.Device
		}
		n.finish(at)
		return n, out.Status == 200 && out.CallID == in.Call
	case opCancel:
		targets, errInvitees, code := c.cancelTargets(in)
		if code != "" {
			return c, out.problem(code)
		}
		for _, id := range targets {
			setState(n.user(id), cancelled, at)
		}
		n.finish(at)
		return n, out.Status == 200 && out.CallID == in.Call && equalStrings(out.ErrorInvitees, errInvitees)
	case opInvite:
		refused := n.invite(in.User, in.Invitees, at)
		return n, out.Status == 200 && out.CallID == in.Call && equalErrorUsers(out.ErrorUsers, refused)
	case opJoin:
		if out.Status != 200 || out.CallID != in.Call || out.CreateTime != c.created ||
			out.ExtendedData != c.ext || !at.admits(out.JoinTime, c.clock) {
			return c, false
		}
		if u == nil {
			// Nobody invited a user who joins on their own: like the
			// caller, it is its own inviter.
			u = n.add(modelUser{id: in.User, inviter: in.User})
		}
		if u.state != accepted {
			setState(u, accepted, exact(out.JoinTime))
		} // else a device switch: the state (and its time) stay
		u.ext, u.device = in.Ext, in.Device
		return n.observeUsers(out.Users)
	case opQuit:
		if out.Status != 200 || out.CallID != in.Call || out.CreateTime != c.created ||
			!u.acceptedAt.admits(out.AcceptTime, c.clock) || !at.admits(out.QuitTime, c.clock) {
			return c, false
		}
		setState(u, quit, exact(out.QuitTime))
		u.ext = in.Ext
		n.finish(exact(out.QuitTime))
		return n, true
	case opEnd:
		ok := out.Status == 200 && out.CallID == in.Call && out.CreateTime == c.created &&
			u.acceptedAt.admits(out.AcceptTime, c.clock) && at.admits(out.EndTime, c.clock)
		u.acceptedAt, u.updated = exact(out.AcceptTime), exact(out.AcceptTime)
		n.end(exact(out.EndTime))
		return n, ok
	}
	return c, false
}

// create starts the call: the caller accepted on its device, the invitees
// inviting with the call's timeout.
func (c callModel) create(in callInput, out callOutput, at when) (callModel, bool) {
	if c.exists || out.Status != 201 || out.CallID != in.Call || out.Info == nil || out.Timeout != in.Timeout ||
		!at.admits(out.Info.CreateTime, c.clock) {
		return c, false
	}
	at = exact(out.Info.CreateTime)
	n := callModel{
		clock: c.clock, exists: true, caller: in.User, mode: in.Mode, ext: in.Ext, timeout: in.Timeout,
		notReceivedCheck: in.NotReceivedCheck, created: at.lo,
	}
	me := n.add(modelUser{id: in.User, inviter: in.User, ext: in.Ext, device: callerDevice(in.Device)})
	setState(me, accepted, at)
	refused := n.invite(in.User, in.Invitees, at)
	n.finish(at)
	if !equalErrorUsers(out.ErrorUsers, refused) {
		return c, false
	}
	return n.observe(out.Info, in.Call)
}

// observe checks a CallInfo the server sent against c and pins the times
// it shows.
func (c callModel) observe(info *callInfo, id string) (callModel, bool) {
	if info == nil {
		return c, false
	}
	state, endTime := "started", exact(0)
	if c.ended {
		state, endTime = "ended", c.endTime
	}
	if info.CallID != id || info.Caller != c.caller || info.Mode != c.mode || info.State != state ||
		info.Timeout != c.timeout || info.ExtendedData != c.ext || info.CreateTime != c.created ||
		!endTime.admits(info.EndTime, c.clock) {
		return c, false
	}
	if c.ended {
		c.endTime = exact(info.EndTime)
	}
	return c.observeUsers(info.CallUserList)
}

// observeUsers checks callUserList as a set (the contract gives it no
// order) and pins the times it shows.
func (c callModel) observeUsers(list []userInfo) (callModel, bool) {
	if len(list) != c.n {
		return c, false
	}
	seen := map[string]bool{}
	for _, got := range list {
		u := c.user(got.UserID)
		if u == nil || seen[got.UserID] || got.State != u.state || got.Inviter != u.inviter || got.ExtendedData != u.ext ||
			!u.updated.admits(got.UpdateTime, c.clock) {
			return c, false
		}
		seen[got.UserID] = true
		t := exact(got.UpdateTime)
		u.updated = t
		switch u.state {
		case inviting: // the time of the invitation, so of its deadlines
			if !c.ended {
				c.invitedAt(u, t)
			}
		case accepted: // the time the user became accepted
			u.acceptedAt = t
		}
	}
	return c, true
}

// callerDevice is the caller's main device after creating a call: none.
// The seed counts the initiating device as a main device, but the contract
// (which the server follows and api/openapi.yaml now states) routes a
// user's call events to one device only once it accepted or joined from
// it: a caller creating calls from a backend (no X-Device-ID) must keep
// getting them on every stream. So a caller's join from any device sets its
// main device (200), never 409 already_in_call.
func callerDevice(device string) string { return "" }

// refusal is the error code the contract gives op on c ("" when allowed),
// checked in the documented order: not in the call (or, for a join, not
// let in: a full call), ended, wrong mode, the user's state.
func (c callModel) refusal(in callInput, me *modelUser) string {
	advancedOnly := in.Kind == opInvite || in.Kind == opJoin || in.Kind == opQuit || in.Kind == opEnd
	switch {
	case in.Kind == opJoin && me == nil && c.mode != "advanced":
		return "call_not_found" // a general call cannot be joined: hidden from outsiders
	case in.Kind == opJoin && me == nil && c.n >= maxUsers:
		return "call_not_found" // may not join a full call, ended or not (api/openapi.yaml's order)
	case in.Kind != opJoin && me == nil:
		return "call_not_found"
	case in.Kind == opGet || in.Kind == opFinal:
		return ""
	case c.ended:
		return "call_ended"
	case advancedOnly && c.mode != "advanced":
		return "wrong_mode"
	}
	switch in.Kind {
	case opAccept, opReject:
		if !pending(me.state) {
			return "invalid_state"
		}
	case opInvite, opQuit, opEnd:
		if me.state != accepted {
			return "invalid_state"
		}
	case opJoin:
		if me != nil && me.state == accepted && me.device == in.Device {
			return "already_in_call"
		}
	}
	return ""
}

// cancelTargets applies cancel's rules (api/openapi.yaml): the named
// invitees (or, with an empty list, every pending one) the actor invited;
// none of the named invited by the actor (with an empty list: nobody in
// the call invited by the actor) is forbidden, none of them pending any
// more is invalid_state.
func (c callModel) cancelTargets(in callInput) (targets, errInvitees []string, code string) {
	errInvitees = []string{}
	mine := false
	if len(in.Invitees) == 0 {
		for i := range c.n {
			u := c.users[i]
			if u.inviter == in.User && u.id != in.User {
				mine = true
				if pending(u.state) {
					targets = append(targets, u.id)
				}
			}
		}
	}
	for _, id := range in.Invitees {
		u := c.user(id)
		if u == nil || u.inviter != in.User || id == in.User {
			errInvitees = append(errInvitees, id)
			continue
		}
		mine = true
		if !pending(u.state) {
			errInvitees = append(errInvitees, id)
			continue
		}
		targets = append(targets, id)
	}
	switch {
	case !mine:
		return nil, nil, "forbidden"
	case len(targets) == 0:
		return nil, nil, "invalid_state"
	}
	return targets, errInvitees, ""
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalErrorUsers(a, b []errorUser) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
