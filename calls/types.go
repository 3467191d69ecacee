package calls

// Mode is the call invitation mode, as in ZIM: general calls end once nobody
// is pending; advanced calls live until ended or empty.
type Mode string

const (
	ModeGeneral  Mode = "general"
	ModeAdvanced Mode = "advanced"
)

// CallState is the state of the call as a whole.
type CallState string

const (
	CallStarted CallState = "started"
	CallEnded   CallState = "ended"
)

// UserState is one user's state within a call (ZIMCallUserState).
type UserState string

const (
	StateInviting       UserState = "inviting"
	StateReceived       UserState = "received"
	StateNotYetReceived UserState = "notYetReceived"
	StateAccepted       UserState = "accepted"
	StateRejected       UserState = "rejected"
	StateCancelled      UserState = "cancelled"
	StateTimeout        UserState = "timeout"
	StateQuit           UserState = "quit"
	StateUnknown        UserState = "unknown"
)

// Pending reports whether the user still has an unanswered invitation.
func (s UserState) Pending() bool {
	return s == StateInviting || s == StateReceived || s == StateNotYetReceived
}

// Active reports whether the user is still part of the call's audience: it is
// pending or in the call. Such users receive callUserStateChanged.
func (s UserState) Active() bool { return s.Pending() || s == StateAccepted }

// EndReason says why a call ended (the call.ended webhook's reason).
type EndReason string

const (
	EndByEnd         EndReason = "end"
	EndCompleted     EndReason = "completed"
	EndEmpty         EndReason = "empty"
	EndCallerOffline EndReason = "caller_offline"
)

// Call is one call invitation with every user it ever involved.
type Call struct {
	ID     string
	Seq    int64 // storage order, newest highest; the paging cursor (nextFlag)
	Caller string
	Mode   Mode
	State  CallState
	// Timeout is the invitation timeout in seconds.
	Timeout      int
	ExtendedData string
	CreateTime   int64 // Unix ms
	EndTime      int64 // Unix ms, 0 while started
	EndReason    EndReason
	// NotReceivedCheck enables the notYetReceived transition for invitees.
	NotReceivedCheck bool
	// CallerTracked is set once the caller had an SSE stream open while the
	// call was pending; only then does the caller going offline cancel it.
	CallerTracked bool
	// CallerOfflineAt is when the caller-offline deadline fires (0: none).
	CallerOfflineAt int64
	Users           []*CallUser
}

// CallUser is one user's row in a call.
type CallUser struct {
	UserID       string
	State        UserState
	Inviter      string
	ExtendedData string
	UpdateTime   int64 // Unix ms of the last state change
	InviteTime   int64 // Unix ms of the last invitation (0 for the caller)
	AcceptTime   int64 // Unix ms the user last became accepted
	// TimeoutAt is when the pending invitation times out (0: not pending).
	TimeoutAt int64
	// NotReceivedAt is when a still-inviting invitee becomes notYetReceived.
	NotReceivedAt int64
	// MainDevice is the device that accepted or joined; once set, the user's
	// events for this call go only to that device.
	MainDevice string
	// MissedTime is when this user's call.missed was settled (0: not yet):
	// produced, or made moot by an answer (accept, join or reject). Once
	// set, no call.missed follows for this user in this call, however often
	// the user is invited again (see missed.go). No API answer or event
	// shows it.
	MissedTime int64
	// dirty marks rows a transition changed, so storage writes only those.
	dirty bool
}

// Dirty reports whether a transition changed this row since it was loaded.
func (u *CallUser) Dirty() bool { return u.dirty }

// User returns the user's row, or nil when the user is not in the call.
func (c *Call) User(userID string) *CallUser {
	for _, u := range c.Users {
		if u.UserID == userID {
			return u
		}
	}
	return nil
}

// Clone returns a deep copy, so a failed transition never leaks changes.
func (c *Call) Clone() *Call {
	cp := *c
	cp.Users = make([]*CallUser, len(c.Users))
	for i, u := range c.Users {
		uc := *u
		cp.Users[i] = &uc
	}
	return &cp
}

// Saved returns a deep copy of c with no user marked dirty: c as a store
// reads it back once Save has written it. A store that keeps the calls it
// wrote (db/sqlite's writer) hands out such copies instead of reading them
// back.
func (c *Call) Saved() *Call {
	cp := c.Clone()
	for _, u := range cp.Users {
		u.dirty = false
	}
	return cp
}

// Actor is who performs an action: the user and the device it acts from.
type Actor struct {
	UserID string
	Device string
}

// PushConfig is the offline push an action asks the app backend to send.
type PushConfig struct {
	Title       string `json:"title,omitempty"`
	Content     string `json:"content,omitempty"`
	Payload     string `json:"payload,omitempty"`
	ResourcesID string `json:"resourcesID,omitempty"`
}

// ErrorUser is an invitee an invitation could not reach, with why.
type ErrorUser struct {
	UserID string `json:"userID"`
	Reason string `json:"reason"`
}

// Reasons in errorUserList.
const (
	ReasonAlreadyInCall = "already_in_call"
	ReasonCallFull      = "call_full"
	// ReasonBusy (busy.go) is the third.
)
