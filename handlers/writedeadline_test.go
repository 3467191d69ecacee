package handlers

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
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

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// A shutdown's cut brings write deadlines forward, never back: a request
// whose own deadline comes before the cut keeps it (a review saw an unread
// answer held until the cut, past its own deadline), and one with a later
// deadline, or none armed yet, gets the cut.
func TestCutMovesDeadlinesForwardOnly(t *testing.T) {
	var a Answers
	now := time.Now()
	early, late, fresh := &deadlineConn{}, &deadlineConn{}, &deadlineConn{}
	for _, c := range []net.Conn{early, late, fresh} {
		a.ConnState(c, http.StateActive)
	}
	a.armed(early, now.Add(time.Second))
	a.armed(late, now.Add(time.Minute))
	cut := now.Add(10 * time.Second)
	a.CutAt(cut)
	if len(early.set) != 0 {
		t.Errorf("a deadline 1 s ahead was moved to the cut 10 s ahead: %v", early.set)
	}
	for name, c := range map[string]*deadlineConn{"a later deadline": late, "none armed yet": fresh} {
		if len(c.set) != 1 || !c.set[0].Equal(cut) {
			t.Errorf("%s: deadlines set %v, want the cut", name, c.set)
		}
	}
	// Idle again: no longer followed.
	a.ConnState(late, http.StateIdle)
	a.CutAt(now.Add(5 * time.Second))
	if len(late.set) != 1 {
		t.Errorf("an idle connection's deadline was set: %v", late.set)
	}
}

// /debug/pprof/cmdline printed the process's arguments (-jwt-secret,
// -admin-token, a -db password) to any admin, a JWT with role "admin"
// included: it is not served.
func TestPprofDoesNotServeCmdline(t *testing.T) {
	srv := httptest.NewServer(newTestHandler(t, nil))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/debug/pprof/cmdline", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), os.Args[0]) {
		t.Fatalf("GET /debug/pprof/cmdline as admin: %d %q", resp.StatusCode, body)
	}
}
