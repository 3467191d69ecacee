package calls

// Inputs and results of the Service's use-cases. Results carry JSON tags
// because they are exactly the contract's response bodies.

// InviteInput starts a call (POST /calls).
type InviteInput struct {
	Invitees               []string
	Mode                   Mode // "" means general
	Timeout                int  // seconds; 0 means DefaultTimeout
	ExtendedData           string
	PushConfig             *PushConfig
	EnableNotReceivedCheck bool
	BusyPolicy             BusyPolicy // "" means BusyRing
}

// InviteResult is the answer to POST /calls.
type InviteResult struct {
	CallID        string      `json:"callID"`
	Timeout       int         `json:"timeout"`
	ErrorUserList []ErrorUser `json:"errorUserList"`
	// BusyUsers are the invitees invited although busy (BusyRing); never nil.
	BusyUsers []string `json:"busyUsers"`
	Call      CallInfo `json:"call"`
}

// CancelInput cancels pending invitations; no invitees means all the
// pending ones the actor invited.
type CancelInput struct {
	Invitees     []string
	ExtendedData string
	PushConfig   *PushConfig
}

// CancelResult is the answer to cancel.
type CancelResult struct {
	CallID        string   `json:"callID"`
	ErrorInvitees []string `json:"errorInvitees"`
}

// CallingInviteInput invites more users into an advanced call.
type CallingInviteInput struct {
	Invitees   []string
	PushConfig *PushConfig
	BusyPolicy BusyPolicy // "" means BusyRing
}

// CallingInviteResult is the answer to invite.
type CallingInviteResult struct {
	CallID        string      `json:"callID"`
	ErrorUserList []ErrorUser `json:"errorUserList"`
	// BusyUsers are the invitees invited although busy (BusyRing); never nil.
	BusyUsers []string `json:"busyUsers"`
}

// JoinResult is the answer to join.
type JoinResult struct {
	CallID       string         `json:"callID"`
	CreateTime   int64          `json:"createTime"`
	JoinTime     int64          `json:"joinTime"`
	ExtendedData string         `json:"extendedData"`
	CallUserList []CallUserInfo `json:"callUserList"`
}

// LeaveInput is the body of quit and end.
type LeaveInput struct {
	ExtendedData string
	PushConfig   *PushConfig
}

// QuitResult is the answer to quit.
type QuitResult struct {
	CallID     string `json:"callID"`
	CreateTime int64  `json:"createTime"`
	AcceptTime int64  `json:"acceptTime"`
	QuitTime   int64  `json:"quitTime"`
}

// EndResult is the answer to end.
type EndResult struct {
	CallID     string `json:"callID"`
	CreateTime int64  `json:"createTime"`
	AcceptTime int64  `json:"acceptTime"`
	EndTime    int64  `json:"endTime"`
}

// ActionResult is the answer to accept and reject.
type ActionResult struct {
	CallID string `json:"callID"`
}

// ListResult is the answer to GET /calls.
type ListResult struct {
	CallList []CallInfo `json:"callList"`
	NextFlag int64      `json:"nextFlag"`
}
