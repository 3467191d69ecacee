package sse

import (
	"net/http/httptest"
	"testing"
	"time"
)

// A refused stream repeats a valid Last-Event-ID (header, or the query
// parameter without one) and leaves an invalid one out.
func TestRefuseRepeatsTheClientsID(t *testing.T) {
	for _, tc := range []struct {
		name, header, query, want string
	}{
		{"no id", "", "", "retry: 5000\n: full\n\n"},
		{"header", "42", "", "retry: 5000\nid: 42\n: full\n\n"},
		{"query", "", "?lastEventID=7", "retry: 5000\nid: 7\n: full\n\n"},
		{"invalid", "x", "", "retry: 5000\n: full\n\n"},
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
