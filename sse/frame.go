package sse

import (
	"strconv"
	"time"

	"callsig/calls"
)

// frame is one event ready to write: the bytes of its SSE block, encoded
// once and shared by every stream it goes to.
type frame struct {
	id     int64
	user   string
	device string // "" = every device of the user
	callID string
	typ    calls.EventType
	time   int64 // the event's Time
	bytes  []byte
	// committed is the wall time the hub was told of the event (zero for
	// events read from the log): the start of the delivery lag.
	committed time.Time
}

func newFrame(e *calls.Event, committed time.Time) *frame {
	return &frame{
		id: e.ID, user: e.UserID, device: e.Device, callID: e.CallID, typ: e.Type, time: e.Time,
		bytes: encodeEvent(e.ID, string(e.Type), e.Data), committed: committed,
	}
}

// forDevice reports whether a stream of device may see the frame: the
// main-device rule, already decided when the event was written.
func (f *frame) forDevice(device string) bool { return f.device == "" || f.device == device }

// encodeEvent builds "id: …\nevent: …\ndata: …\n\n". The store holds data as
// compact JSON, which never contains a raw CR or LF (encoding/json escapes
// them), so it is always the single data line the contract promises.
func encodeEvent(id int64, typ string, data []byte) []byte {
	if len(data) == 0 {
		data = []byte("{}")
	}
	b := make([]byte, 0, len("id: \nevent: \ndata: \n\n")+20+len(typ)+len(data))
	b = append(b, "id: "...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, "\nevent: "...)
	b = append(b, typ...)
	b = append(b, "\ndata: "...)
	b = appendOneLine(b, data)
	return append(b, "\n\n"...)
}

// appendOneLine appends data with any CR or LF replaced by a space, so a
// payload that is not compact JSON still cannot end the data line early
// (JSON allows those bytes only as insignificant whitespace).
func appendOneLine(b, data []byte) []byte {
	for _, c := range data {
		if c == '\n' || c == '\r' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// Fixed blocks of the stream.
var (
	heartbeatBlock = []byte(": ping\n\n")
	// heartbeatEventBlock is a heartbeat for ?heartbeat=event: still the
	// comment the contract promises, in a block that is also an event
	// (no id: the client's position stays where it is).
	heartbeatEventBlock = []byte(": ping\nevent: heartbeat\ndata: {}\n\n")
	// resetBlock tells a client that events after its Last-Event-ID were
	// pruned. It carries data because EventSource drops an event with none.
	resetBlock = []byte("event: reset\ndata: {}\n\n")
)

// openingBlock is the first block of every stream: the reconnection delay
// and, when resuming, the client's own Last-Event-ID again. Per the WHATWG
// parser the blank line ending a block sets the client's last event ID to
// the block's id buffer, which starts empty on each connection; repeating
// the id keeps a spec-exact client's resume point if it drops again before
// the next event.
func openingBlock(retry time.Duration, lastID int64, resume bool) []byte {
	b := append([]byte(nil), "retry: "...)
	b = strconv.AppendInt(b, retry.Milliseconds(), 10)
	b = append(b, '\n')
	if resume {
		b = append(b, "id: "...)
		b = strconv.AppendInt(b, lastID, 10)
		b = append(b, '\n')
	}
	return append(b, '\n')
}

// syncedBlock ends a new stream's opening: event synced, with the head of
// the log as its id. It was an id-only block once, which an EventSource
// keeps for its own reconnections but dispatches to nobody: a client that
// reopens the stream itself (to renew its token, after a refusal) knew no
// position past the pending invitations, and got the history from before
// it opened again (a call invited and cancelled meanwhile rang).
func syncedBlock(id int64) []byte {
	b := append([]byte(nil), "id: "...)
	b = strconv.AppendInt(b, id, 10)
	return append(b, "\nevent: synced\ndata: {}\n\n"...)
}
