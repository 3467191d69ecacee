package sse

import (
	"net/http/httptest"
	"testing"
	"time"
)

// A refused stream is one block, the event refused with the retry and the
// reason as its data, which repeats a valid Last-Event-ID (header, or the
// query parameter without one) and leaves an invalid one out.
func TestRefuseRepeatsTheClientsID(t *testing.T) {
	const event = "event: refused\ndata: {\"retry\":5000,\"reason\":\"full\"}\n\n"
	for _, tc := range []struct {
		name, header, query, want string
	}{
		{"no id", "", "", "retry: 5000\n" + event},
		{"header", "42", "", "retry: 5000\nid: 42\n" + event},
		{"query", "", "?lastEventID=7", "retry: 5000\nid: 7\n" + event},
		{"invalid", "x", "", "retry: 5000\n" + event},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/events"+tc.query, nil)
			if tc.header != "" {
				r.Header.Set("Last-Event-ID", tc.header)
			}
			w := httptest.NewRecorder()
			Refuse(w, r, 5*time.Second, "full")
			if w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" || w.Body.String() != tc.want {
				t.Errorf("%d %q %q, want 200 text/event-stream %q", w.Code, w.Header().Get("Content-Type"), w.Body.String(), tc.want)
			}
		})
	}
}

// The reason is a JSON string in the refused event's one data line,
// whatever it holds.
func TestRefuseReasonIsOneLineOfJSON(t *testing.T) {
	w := httptest.NewRecorder()
	Refuse(w, httptest.NewRequest("GET", "/events", nil), 2*time.Second, "a \"quoted\"\nreason <&>")
	want := "retry: 2000\nevent: refused\ndata: {\"retry\":2000,\"reason\":\"a \\\"quoted\\\"\\nreason <&>\"}\n\n"
	if got := w.Body.String(); got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
