package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

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
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.JWTSecret = "" }))
	proxy := testkit.StartTCPProxy(t, strings.TrimPrefix(s.URL, "http://"))
	bob := openDemo(t, browser, "http://"+proxy.Addr, "bob")

	// A client of the page's own, with a short heartbeatTimeout (the demo
	// keeps the default 40 s), from the module the server serves.
	eval := func(what, js string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bob.ctx, browserWait)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	eval("a client of bob's", `(async () => {
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
		v := eval("what the page saw", `window.seen.states.join(' ') + '|' + window.seen.calls.join(' ')`)
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
