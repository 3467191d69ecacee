package handlers

import (
	"net/http/httptest"
	"testing"
)

// Who acts, from which device, under which key: each header once. A
// proxy reading the last of two while the server read the first would
// see another request than the one served.
func TestHeadersThatMayBeGivenOnce(t *testing.T) {
	h := newTestHandler(t, nil)
	alice, bob := "Bearer "+token(t, "alice", nil), "Bearer "+token(t, "bob", nil)
	tests := []struct {
		header string
		values []string
	}{
		{"Authorization", []string{alice, bob}},
		{"X-Device-ID", []string{"phone", "tablet"}},
		{"Idempotency-Key", []string{"k1", "k2"}},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/calls", nil)
			r.Header.Set("Authorization", alice)
			r.Header.Del(tt.header)
			for _, v := range tt.values {
				r.Header.Add(tt.header, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			p := decodeProblem(t, w, 400, "invalid_request")
			if len(p.Errors) != 1 || p.Errors[0].Field != tt.header {
				t.Fatalf("errors %+v, want one naming %s", p.Errors, tt.header)
			}
		})
	}
}
