package cluster

import (
	"strings"
	"testing"

	"callsig/calls"
	"callsig/internal/jsonenc"
)

// An event handed over to another node carries its data byte for byte as
// the log holds it, so a stream writes the same bytes under its id whether
// it read the event from the log or was handed it: markup and non-ASCII
// text are not escaped on the way (json.Marshal wrote each <, > and & as a
// six-byte \u escape), and the line stays one line.
func TestEventLineKeepsTheDataBytes(t *testing.T) {
	// Encoded as calls encodes the events it stores.
	data, err := jsonenc.Marshal(map[string]any{
		"callID":       "c1",
		"extendedData": "<b>Tom & Jerry</b> — Zoë, 東京 ☎ \u2028\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range [][]byte{data, []byte(`{"html":"<b>Tom & Jerry</b>","name":"Zoë 東京"}`)} {
		ev := calls.Event{ID: 42, After: 41, UserID: "bob", CallID: "c1", Type: calls.EventReceived, Time: 1000, Data: d}
		line, ok := eventLine(&ev)
		if !ok {
			t.Fatalf("no event line for %s", d)
		}
		if strings.ContainsAny(line, "\n\r") {
			t.Errorf("line %q is not one line", line)
		}
		got, ok := parseEventLine(line)
		if !ok {
			t.Fatalf("line %s not parsed", line)
		}
		if string(got.Data) != string(d) {
			t.Errorf("data handed over differs from the log's:\n got  %s\n want %s", got.Data, d)
		}
	}
}
