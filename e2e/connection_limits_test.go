package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// fresh sends one request on a connection of its own (the cap counts
// connections, so a pooled one would blur the test) and reads the answer;
// a hang fails the test instead of blocking it.
func fresh(t *testing.T, s *testkit.Server, path, token string) (*http.Response, []byte) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return res, body
}

// With every connection the server allows taken (here by three event
// streams), another user's request gets a fast 503 with Retry-After rather
// than hanging, health, readiness and metrics still answer, and once a
// connection is freed the server serves again.
func TestConnectionCapKeepsHealthAnswering(t *testing.T) {
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.MaxConnections = 3 }))
	streams := []*testkit.Stream{s.Stream("alice", "", ""), s.Stream("bob", "", ""), s.Stream("carol", "", "")}

	res, body := fresh(t, s, "/calls", s.Token("dave"))
	var p testkit.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if res.StatusCode != http.StatusServiceUnavailable || p.Code != "unavailable" ||
		res.Header.Get("Content-Type") != "application/problem+json" || res.Header.Get("Retry-After") == "" {
		t.Fatalf("at the cap: %d %v %s; want 503 unavailable with Retry-After", res.StatusCode, res.Header, body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if res, body := fresh(t, s, path, ""); res.StatusCode != http.StatusOK {
			t.Fatalf("%s at the cap: %d %s", path, res.StatusCode, body)
		}
	}
	// An event stream at the cap: not a 503, on which EventSource would
	// give up for good, but an empty stream asking for a later
	// reconnection, and saying so in its refused event.
	res, body = fresh(t, s, "/events", s.Token("dave"))
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(string(body), "retry: 5000\nevent: refused\ndata: {\"retry\":5000,") || strings.Contains(string(body), "id:") {
		t.Fatalf("event stream at the cap: %d %s %q", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	if got := scrapeMetric(t, s, "callsig_http_connections_max"); got != 3 {
		t.Fatalf("callsig_http_connections_max = %v, want 3", got)
	}
	// A share of 256 is the whole cap of 3: no per-address cap.
	if got := scrapeMetric(t, s, "callsig_http_connections_per_address_max"); got != 0 {
		t.Fatalf("callsig_http_connections_per_address_max = %v, want 0", got)
	}
	for _, st := range streams {
		if st.Ended() {
			t.Fatal("a stream holding a connection was closed")
		}
	}

	streams[0].Close()
	wait.For(t, eventWait, "a freed connection to serve again", func() bool {
		res, _ := fresh(t, s, "/calls", s.Token("dave"))
		return res.StatusCode == http.StatusOK
	})
}

// The reserve above the cap is for health checks and scrapes, which send
// their request at once: a client that opens reserve connections and stays
// silent loses them after a short cutoff (2 s, not ReadHeaderTimeout's
// 10 s), and /healthz answers again while the cap is still full.
func TestConnectionReserveDropsSilentClients(t *testing.T) {
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.MaxConnections = 1 }))
	stream := s.Stream("alice", "", "") // holds the one normal slot
	addr := strings.TrimPrefix(s.URL, "http://")
	var silent []net.Conn
	for range 16 { // the whole reserve
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		silent = append(silent, c)
	}
	healthz := func() int {
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		res, err := client.Get(s.URL + "/healthz")
		if err != nil {
			return 0 // closed at accept: cap and reserve full
		}
		res.Body.Close()
		return res.StatusCode
	}
	wait.For(t, eventWait, "the silent connections to fill the reserve", func() bool { return healthz() == 0 })

	start := time.Now()
	for i, c := range silent {
		_ = c.SetReadDeadline(start.Add(6 * time.Second)) // before ReadHeaderTimeout
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("silent reserve connection %d: read err = %v after %v, want it closed by the server", i, err, time.Since(start))
		}
	}
	wait.For(t, eventWait, "/healthz to answer once the silent connections are gone", func() bool { return healthz() == http.StatusOK })
	if stream.Ended() {
		t.Fatal("the stream holding the normal slot was closed")
	}
}

// A client resuming with Last-Event-ID that meets the connection cap gets
// an empty stream asking for a later reconnection, which repeats its id:
// parsed as WHATWG says (testkit's client), the block's end sets the
// client's last event ID to the block's id buffer. Without the id the
// client came back as a new stream and missed, with no reset, what
// happened while it was away (here: the cancellation of its call).
func TestClientRefusedAtTheCapKeepsItsLastEventID(t *testing.T) {
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.MaxConnections = 3 }))
	bob := listen(t, s, "bob", "")
	alice := s.Client("alice")
	c1 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.expect(ev(calls.EventReceived, c1), changed(c1, "bob=received"))
	held := bob.Stream.LastEventID()
	bob.drop()
	alice.Action(c1, "cancel", nil).Want(http.StatusOK) // bob is away

	// Three other streams take every connection the server allows.
	fillers := []*testkit.Stream{s.Stream("x", "", ""), s.Stream("y", "", ""), s.Stream("z", "", "")}
	wait.For(t, eventWait, "the fillers' streams", func() bool {
		for _, f := range fillers {
			if f.Retry() <= 0 {
				return false
			}
		}
		return true
	})

	// bob's EventSource reconnects with its id and meets the cap.
	over := s.Stream("bob", "", held)
	over.WaitEnded(eventWait)
	if over.Retry() != 5000 {
		t.Fatalf("not the overflow stream: retry %d", over.Retry())
	}
	got := over.LastEventID()
	fillers[0].Close()

	// 5 s later it reconnects with whatever last event ID it now holds
	// (again while the freed connection is still counted).
	wait.For(t, eventWait, "a stream past the cap", func() bool {
		st := s.Stream("bob", "", got)
		wait.For(t, eventWait, "the opening block", func() bool { return st.Retry() > 0 })
		if st.Retry() == 5000 {
			st.Close()
			return false
		}
		bob.Stream = st
		return true
	})
	marker := s.Client("carol").Invite(nil, "bob").CallID
	e := bob.Next(eventWait)
	if e.Type != string(calls.EventCancelled) || e.CallID() != c1 {
		t.Fatalf("after the overflow stream the client's last event ID is %q (was %q); reconnecting with it, the "+
			"first event is %s %s (marker %s), want %s %s: the cancellation was skipped with no reset",
			got, held, e.Type, e.CallID(), marker, calls.EventCancelled, c1)
	}
}
