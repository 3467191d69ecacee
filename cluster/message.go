package cluster

import (
	"bytes"
	"encoding/json"
	"strings"

	"callsig/calls"
	"callsig/internal/jsonenc"
)

// A message is text: the publishing node's id on the first line, then a
// line per announcement: a user id alone (a wake-up: read the log), or a
// user id, a tab and one event as JSON (eventLine). User ids are
// [A-Za-z0-9_.@:-] (handlers.ValidID), so neither a newline nor a tab
// occurs in one, and an event's JSON is compact (its data is the log's
// compact JSON, which escapes newlines); a garbled line only wakes the
// user's streams, which read the log.

// maxBatchBytes bounds one message (NATS' default max payload is 1 MB).
const maxBatchBytes = 32 << 10

// encode appends messages for lines to out, each at most maxBatchBytes
// unless a single line is longer.
func encode(node string, lines []string, out [][]byte) [][]byte {
	var b []byte
	for _, u := range lines {
		if b != nil && len(b)+1+len(u) > maxBatchBytes {
			out = append(out, b)
			b = nil
		}
		if b == nil {
			b = append(make([]byte, 0, min(maxBatchBytes, 64+len(lines)*16)), node...)
		}
		b = append(b, '\n')
		b = append(b, u...)
	}
	if b != nil {
		out = append(out, b)
	}
	return out
}

// decode returns the node and lines of a message.
func decode(msg []byte) (node string, lines []string) {
	first, rest, _ := bytes.Cut(msg, []byte{'\n'})
	if len(rest) == 0 {
		return string(first), nil
	}
	return string(first), strings.Split(string(rest), "\n")
}

// wireEvent is an event on the wire, its user in front of it.
type wireEvent struct {
	ID     int64           `json:"id"`
	After  int64           `json:"after"`
	Device string          `json:"device,omitempty"`
	CallID string          `json:"call"`
	Type   calls.EventType `json:"type"`
	Time   int64           `json:"time"`
	Data   json.RawMessage `json:"data"`
}

// eventLine is ev's line, for an event that names its predecessor: the
// only kind another node can hand over (false: announce its user only).
//
// It is encoded as the log's data is (jsonenc, no HTML escaping), so the
// data arrives byte for byte as committed: the other node's streams write
// an event handed over under the same id and with the same bytes as one
// read from the log. json.Marshal compacted the data with <, > and &
// escaped, and a call's markup grew sixfold on the wire and on streams.
// Compacting the log's data, compact already, leaves it as it is.
func eventLine(ev *calls.Event) (string, bool) {
	if ev.After <= 0 {
		return "", false
	}
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b, err := jsonenc.Marshal(wireEvent{ID: ev.ID, After: ev.After, Device: ev.Device, CallID: ev.CallID,
		Type: ev.Type, Time: ev.Time, Data: data})
	if err != nil {
		return "", false
	}
	return ev.UserID + "\t" + string(b), true
}

// parseEventLine reads an event line (false: a wake-up, or garbled).
func parseEventLine(line string) (calls.Event, bool) {
	user, js, ok := strings.Cut(line, "\t")
	if !ok || user == "" {
		return calls.Event{}, false
	}
	var w wireEvent
	if err := json.Unmarshal([]byte(js), &w); err != nil || w.ID <= 0 || w.After <= 0 {
		return calls.Event{}, false
	}
	return calls.Event{ID: w.ID, After: w.After, UserID: user, Device: w.Device, CallID: w.CallID,
		Type: w.Type, Data: w.Data, Time: w.Time}, true
}
