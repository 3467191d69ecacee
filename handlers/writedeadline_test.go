package handlers

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The event stream and the admin's profiles answer for longer than the
// answer timeout: the deadline is cleared for them, once authenticated.
func TestNoWriteDeadlineClearsIt(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.AnswerTimeout = 200 * time.Millisecond })
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/debug/pprof/profile?seconds=1", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a profile of 1 s with a 200 ms answer timeout: status %d", resp.StatusCode)
	}
}
