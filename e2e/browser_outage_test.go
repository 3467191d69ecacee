package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// A browser's stream whose connection goes silent (a phone that changed
// networks: no error, no close, just nothing) is given up by the
// JavaScript client after its heartbeatTimeout, and the next stream picks
// up what was sent into the silence. Chromium's own EventSource runs it:
// the heartbeat events (blocks that also hold the contract's comment)
// reach the page, and nothing in the browser notices the dead path by
// itself. The page loads through a TCP proxy, and the test freezes the
// proxy: every byte held, both ways, nothing refused.
func TestBrowserStreamGoneSilent(t *testing.T) {
	browser := startBrowser(t)
	// Heartbeats every 250 ms: the page's client gives a stream up after
	// 1.5 s without one, and a quiet, healthy stream must outlive that.
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.JWTSecret = "" }), testkit.WithStreamHeartbeat(250*time.Millisecond))
	proxy := testkit.StartTCPProxy(t, strings.TrimPrefix(s.URL, "http://"))
	bob := openDemo(t, browser, "http://"+proxy.Addr, "bob")

	// A client of the page's own, with a short heartbeatTimeout (the demo
	// keeps the default 40 s), from the module the server serves.
	bob.eval("a client of bob's", `(async () => {
		const {CallsigClient} = await import('/sdk/callsig.js');
		const res = await fetch('/dev/token', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"userID":"bob"}'});
		const c = new CallsigClient({token: (await res.json()).token, deviceID: 'silent', heartbeatTimeout: 1500});
		window.seen = {states: [], calls: []};
		c.on('connectionStateChanged', (_, d) => window.seen.states.push(d.state + (d.reason ? ':' + d.reason : '')));
		c.on('callInvitationReceived', (_, d) => window.seen.calls.push(d.callID));
		await c.login();
		return '';
	})()`)
	seen := func() (states, calls []string) {
		v := bob.eval("what the page saw", `window.seen.states.join(' ') + '|' + window.seen.calls.join(' ')`)
		st, cs, _ := strings.Cut(v, "|")
		return strings.Fields(st), strings.Fields(cs)
	}

	before := s.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	wait.For(t, browserWait, "the invitation before the silence", func() bool {
		_, calls := seen()
		return slices.Contains(calls, before)
	})

	proxy.Freeze()
	into := s.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
	// The watchdog gives the silent stream up, and the reconnection it
	// starts waits behind the frozen path too; once the path is back, the
	// next stream resumes from the last event.
	wait.For(t, browserWait, "the silent stream given up", func() bool {
		states, _ := seen()
		return slices.Contains(states, "reconnecting:network")
	})
	proxy.Thaw()
	wait.For(t, browserWait, "the invitation sent into the silence", func() bool {
		_, calls := seen()
		return slices.Contains(calls, into)
	})
	states, calls := seen()
	if want := []string{before, into}; !slices.Equal(calls, want) {
		t.Fatalf("invitations seen %v, want %v, each once", calls, want)
	}
	if states[0] != "connecting" || states[1] != "connected" || states[2] != "reconnecting:network" {
		t.Fatalf("states %v: want connecting, connected, then reconnecting for the silence", states)
	}
	wait.For(t, browserWait, "connected again", func() bool {
		states, _ := seen()
		return states[len(states)-1] == "connected"
	})
}

// A browser's login() while the proxy in front of the server answers 502
// (nginx while the server restarts): Chromium's EventSource fails the
// stream without telling the page its status, so the client asks the API
// what it is, finds the proxy's 502 there too, and stays pending until
// the server is back, where it used to reject stream_refused at the
// second failure.
func TestBrowserLoginThroughARestart(t *testing.T) {
	browser := startBrowser(t)
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.JWTSecret = "" }))
	backend, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	var streams, probes atomic.Int64
	forward := httputil.NewSingleHostReverseProxy(backend)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() && (r.URL.Path == "/events" || r.URL.Path == "/calls") {
			if r.URL.Path == "/events" {
				streams.Add(1)
			} else {
				probes.Add(1)
			}
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n"))
			return
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	bob := openDemo(t, browser, proxy.URL, "bob")
	down.Store(true)
	bob.eval("a login while the proxy answers 502", `(async () => {
		const {CallsigClient} = await import('/sdk/callsig.js');
		const token = async () => (await (await fetch('/dev/token', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"userID":"bob"}'})).json()).token;
		const c = new CallsigClient({tokenProvider: token, deviceID: 'restart'});
		window.login = 'pending';
		c.login().then(() => { window.login = 'connected'; }, (e) => { window.login = 'rejected ' + e.code + ' ' + e.status; });
		return '';
	})()`)
	// Two streams refused and probed: a refusal would have settled login()
	// at the second.
	wait.For(t, browserWait, "two streams and two probes answered 502, or login() settled", func() bool {
		return streams.Load() >= 2 && probes.Load() >= 2 || bob.eval("login's outcome", `window.login`) != "pending"
	})
	if got := bob.eval("login's outcome", `window.login`); got != "pending" {
		t.Fatalf("login() with the proxy answering 502: %s, want pending", got)
	}
	down.Store(false)
	wait.For(t, browserWait, "login() once the server is back", func() bool {
		return bob.eval("login's outcome", `window.login`) != "pending"
	})
	if got := bob.eval("login's outcome", `window.login`); got != "connected" {
		t.Fatalf("login() after the restart: %s, want connected", got)
	}
}
