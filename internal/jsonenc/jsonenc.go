// Package jsonenc encodes the JSON callsig stores and sends: events,
// webhook messages and answers.
package jsonenc

import (
	"bytes"
	"encoding/json"
)

// Marshal is json.Marshal without its HTML escaping: <, > and & stay as
// they are, where json.Marshal writes each as a six-byte \u escape. The
// JSON is read by clients, never embedded in a page, and a call's
// extendedData of 2 KiB of markup grew sixfold in every event, webhook
// message and answer that carried it (a review: 2,048 bytes of "<" made a
// 12-KiB field, copied into each invitee's event). Line separators (U+2028,
// U+2029) and control characters are still escaped, so an encoding stays
// on one line, as an SSE data line must.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}
