package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"callsig/internal/testkit"
	"callsig/internal/testlog"
	"callsig/internal/wait"
)

// logBuffer collects the server's JSON log lines.
type logBuffer struct{ testlog.Buffer }

// has says whether any log line so far contains s.
func (b *logBuffer) has(s string) bool { return b.Has(s) }

// requests returns the access-log lines for route.
func (b *logBuffer) requests(t *testing.T, route string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "http request" && m["route"] == route {
			out = append(out, m)
		}
	}
	return out
}

// The access-log line of an event stream is written when the stream ends,
// with the bytes it carried and how long it was open, not when the stream
// took the connection over (bytes=0, a few milliseconds).
func TestEventStreamAccessLogWhenItEnds(t *testing.T) {
	logs := &logBuffer{}
	s := testkit.Start(t, testkit.WithLogs(logs))
	opened := time.Now()
	st := s.Stream("bob", "", "")
	callID := s.Client("alice").Invite(map[string]any{"extendedData": "hello"}, "bob").CallID
	e := st.WaitFor("callInvitationReceived", func(e testkit.Event) bool { return e.CallID() == callID }, eventWait)
	if got := logs.requests(t, "/events"); len(got) != 0 {
		t.Fatalf("stream logged while still open: %v", got)
	}
	st.Close()
	open := time.Since(opened)

	var line map[string]any
	wait.For(t, eventWait, "the stream's access-log line", func() bool {
		got := logs.requests(t, "/events")
		if len(got) > 0 {
			line = got[0]
		}
		return len(got) > 0
	})
	written, _ := line["bytes"].(float64)
	if int(written) < len(e.Data) || line["status"] != float64(200) || line["user"] != "bob" {
		t.Fatalf("access log %v: want status 200, user bob and at least the %d bytes of the invitation", line, len(e.Data))
	}
	took, err := time.ParseDuration(fmtDuration(line["duration"]))
	if err != nil || took < open/2 {
		t.Fatalf("duration %v (%v): want about the %v the stream was open", line["duration"], err, open)
	}
}

// fmtDuration reads slog's JSON duration (nanoseconds).
func fmtDuration(v any) string {
	ns, _ := v.(float64)
	return time.Duration(ns).String()
}
