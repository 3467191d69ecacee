package calls

import (
	"encoding/json"

	"callsig/internal/jsonenc"
)

// EventType names an SSE event; the names follow ZIM's callbacks.
type EventType string

const (
	EventCreated          EventType = "callInvitationCreated"
	EventReceived         EventType = "callInvitationReceived"
	EventCancelled        EventType = "callInvitationCancelled"
	EventTimeout          EventType = "callInvitationTimeout"
	EventEnded            EventType = "callInvitationEnded"
	EventUserStateChanged EventType = "callUserStateChanged"
)

// Event is one entry of the per-user event log: what one recipient (on all
// its devices, or on one device) is told about a call.
type Event struct {
	ID int64 // assigned by the store; the SSE id, increasing in commit order
	// After is the id of the recipient's event just before this one in the
	// log, when the store knows it (0: not known). A stream that has
	// written exactly that id can take this event as it is, without reading
	// the log to be sure it skips nothing.
	After  int64
	UserID string
	// Device restricts the event to one device's streams ("" = every device):
	// the main-device rule of the contract.
	Device string
	CallID string
	Type   EventType
	// Data is the event's JSON object, encoded once and shared by recipients.
	Data json.RawMessage
	Time int64 // Unix ms
}

// HookType names a webhook event type.
type HookType string

const (
	HookCallCreated      HookType = "call.created"
	HookUserStateChanged HookType = "call.user_state_changed"
	HookCallEnded        HookType = "call.ended"
	HookPushRequested    HookType = "call.push_requested"
	HookCallMissed       HookType = "call.missed" // see missed.go
)

// HookTypes lists every webhook event type, for validation and docs.
var HookTypes = []HookType{HookCallCreated, HookUserStateChanged, HookCallEnded, HookPushRequested, HookCallMissed}

// HookEvent is one webhook message, fanned out by the store to every
// endpoint subscribed to its type.
type HookEvent struct {
	Type   HookType
	CallID string
	Data   json.RawMessage
	Time   int64 // Unix ms
}

// CallUserInfo is the public view of a CallUser.
type CallUserInfo struct {
	UserID       string    `json:"userID"`
	State        UserState `json:"state"`
	Inviter      string    `json:"inviter"`
	ExtendedData string    `json:"extendedData"`
	UpdateTime   int64     `json:"updateTime"`
}

// CallInfo is the public view of a Call.
type CallInfo struct {
	CallID       string         `json:"callID"`
	Caller       string         `json:"caller"`
	Mode         Mode           `json:"mode"`
	State        CallState      `json:"state"`
	Timeout      int            `json:"timeout"`
	ExtendedData string         `json:"extendedData"`
	CreateTime   int64          `json:"createTime"`
	EndTime      int64          `json:"endTime"`
	CallUserList []CallUserInfo `json:"callUserList"`
}

// Info returns the public view of the call.
func (c *Call) Info() CallInfo {
	list := make([]CallUserInfo, len(c.Users))
	for i, u := range c.Users {
		list[i] = u.Info()
	}
	return CallInfo{
		CallID: c.ID, Caller: c.Caller, Mode: c.Mode, State: c.State, Timeout: c.Timeout,
		ExtendedData: c.ExtendedData, CreateTime: c.CreateTime, EndTime: c.EndTime, CallUserList: list,
	}
}

// Info returns the public view of the user's row.
func (u *CallUser) Info() CallUserInfo {
	return CallUserInfo{UserID: u.UserID, State: u.State, Inviter: u.Inviter, ExtendedData: u.ExtendedData, UpdateTime: u.UpdateTime}
}

// Event payloads. Field names and sets follow the contract's event table.
type (
	createdData struct {
		CallID       string         `json:"callID"`
		Caller       string         `json:"caller"`
		Mode         Mode           `json:"mode"`
		Timeout      int            `json:"timeout"`
		CreateTime   int64          `json:"createTime"`
		ExtendedData string         `json:"extendedData"`
		CallUserList []CallUserInfo `json:"callUserList"`
	}
	receivedData struct {
		CallID       string         `json:"callID"`
		Caller       string         `json:"caller"`
		Inviter      string         `json:"inviter"`
		Mode         Mode           `json:"mode"`
		Timeout      int            `json:"timeout"`
		CreateTime   int64          `json:"createTime"`
		ExtendedData string         `json:"extendedData"`
		CallUserList []CallUserInfo `json:"callUserList"`
	}
	cancelledData struct {
		CallID       string `json:"callID"`
		Inviter      string `json:"inviter"`
		Mode         Mode   `json:"mode"`
		ExtendedData string `json:"extendedData"`
	}
	timeoutData struct {
		CallID string `json:"callID"`
		Mode   Mode   `json:"mode"`
	}
	endedData struct {
		CallID         string `json:"callID"`
		Caller         string `json:"caller"`
		OperatedUserID string `json:"operatedUserID"`
		Mode           Mode   `json:"mode"`
		EndTime        int64  `json:"endTime"`
		ExtendedData   string `json:"extendedData"`
	}
	userStateChangedData struct {
		CallID       string         `json:"callID"`
		CallUserList []CallUserInfo `json:"callUserList"`
	}
	callEndedHookData struct {
		CallID         string    `json:"callID"`
		OperatedUserID string    `json:"operatedUserID"`
		EndTime        int64     `json:"endTime"`
		Reason         EndReason `json:"reason"`
	}
	pushRequestedHookData struct {
		CallID     string     `json:"callID"`
		UserID     string     `json:"userID"`
		Kind       PushKind   `json:"kind"`
		PushConfig PushConfig `json:"pushConfig"`
	}
)

// PushKind says what an offline push is about.
type PushKind string

const (
	PushInvitation   PushKind = "invitation"
	PushCancellation PushKind = "cancellation"
	// PushEnd also covers quit: the contract names three kinds, and for the
	// users still in the call a member leaving is the end of it for that
	// member.
	PushEnd PushKind = "end"
)

// mustJSON encodes payloads built from plain structs of strings and numbers,
// which cannot fail to encode.
func mustJSON(v any) json.RawMessage {
	b, err := jsonenc.Marshal(v)
	if err != nil {
		panic("calls: encoding event payload: " + err.Error())
	}
	return b
}
