package e2e

import (
	"net/http"
	"strings"
	"testing"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// Three people use the demo page in a real browser, each in a browser
// context of their own: they sign in, call, ring, accept, reject, join,
// invite, quit, end, cancel and time out, and page through past calls, all
// through the page's buttons. Needs Chromium (see findChromium).
func TestBrowserDemo(t *testing.T) {
	browser := startBrowser(t)
	// Development mode (no secret configured): the page signs in through
	// POST /dev/token.
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.JWTSecret = "" }))
	if !s.App.DevMode {
		t.Fatal("the server is not in development mode")
	}

	alice := openDemo(t, browser, s.URL, "alice")
	bob := openDemo(t, browser, s.URL, "bob")
	carol := openDemo(t, browser, s.URL, "carol")
	alice.signIn("alice")
	bob.signIn("bob")
	carol.signIn("carol")

	const (
		callState = `[data-testid=call-state]`
		accept    = `[data-testid=accept]`
		reject    = `[data-testid=reject]`
	)
	userState := func(user string) string { return `[data-testid=user-state-` + user + `]` }

	// A refused request shows the server's problem detail.
	alice.fill(`[data-testid=invitees]`, "alice")
	alice.click(`[data-testid=call-submit]`)
	alice.waitVisible(`[data-testid=error]`)
	if got := alice.text(`[data-testid=error]`); !strings.Contains(got, "cannot invite yourself") || !strings.Contains(got, "invalid_request") {
		t.Errorf("error shown for calling oneself: %q", got)
	}
	alice.click(`[data-testid=error] .close`)
	alice.waitGone(`[data-testid=error]`)

	// General mode: alice calls bob, bob's page rings, bob accepts, and
	// alice's page shows bob accepted and the call over.
	general := alice.call("bob", "general", 30)
	alice.waitText(card(general, callState), "started")
	bob.waitVisible(ringing(general, ""))
	if got := bob.text(ringing(general, "")); !strings.Contains(got, "alice is calling you") {
		t.Errorf("bob's ringing card reads %q", got)
	}
	bob.click(ringing(general, accept))
	bob.waitGone(ringing(general, ""))
	alice.waitText(card(general, userState("bob")), "accepted")
	alice.waitText(card(general, callState), "ended")
	bob.waitText(card(general, callState), "ended")

	// Advanced mode: bob accepts, carol joins with the call ID, alice
	// invites dave, bob quits and carol ends the call for everyone.
	alice.fill(`[data-testid=extended-data]`, "release planning, video on")
	adv := alice.call("bob", "advanced", 30)
	bob.click(ringing(adv, accept))
	alice.waitText(card(adv, userState("bob")), "accepted")
	carol.fill(`[data-testid=join-call-id]`, adv)
	carol.click(`[data-testid=join-submit]`)
	carol.waitText(card(adv, userState("carol")), "accepted")
	carol.waitText(card(adv, callState), "started")
	alice.waitText(card(adv, userState("carol")), "accepted")
	bob.waitText(card(adv, userState("carol")), "accepted")
	alice.click(card(adv, `[data-testid=invite-more]`))
	alice.typeInto(card(adv, `[data-testid=invite-more-users]`), "dave")
	alice.click(card(adv, `[data-testid=invite-more-submit]`))
	alice.waitText(card(adv, userState("dave")), "inviting")
	carol.waitText(card(adv, userState("dave")), "inviting")
	alice.waitCount(`[data-testid=history-item]`, 2)
	alice.screenshot("demo.png")

	bob.click(card(adv, `[data-testid=quit]`))
	alice.waitText(card(adv, userState("bob")), "quit")
	bob.waitText(card(adv, userState("bob")), "quit")
	bob.waitVisible(card(adv, `[data-testid=join]`)) // bob may come back
	bob.waitGone(card(adv, `[data-testid=end]`))
	carol.click(card(adv, `[data-testid=end]`))
	carol.waitText(card(adv, callState), "ended")
	alice.waitText(card(adv, callState), "ended")
	alice.waitText(card(adv, userState("carol")), "accepted") // end leaves the states as they are
	alice.waitGone(card(adv, `[data-testid=end]`))

	// Cancel: carol rejects, then alice cancels bob, who stops ringing.
	cancelled := alice.call("bob, carol", "general", 30)
	bob.waitVisible(ringing(cancelled, ""))
	carol.click(ringing(cancelled, reject))
	carol.waitGone(ringing(cancelled, ""))
	alice.waitText(card(cancelled, userState("carol")), "rejected")
	alice.click(card(cancelled, `[data-testid=cancel]`))
	bob.waitGone(ringing(cancelled, ""))
	bob.waitText(card(cancelled, userState("bob")), "cancelled")
	alice.waitText(card(cancelled, userState("bob")), "cancelled")
	alice.waitText(card(cancelled, callState), "ended")
	alice.waitGone(card(cancelled, `[data-testid=cancel]`))

	// Timeout: nobody answers within two seconds of real time.
	timedOut := alice.call("bob", "general", 2)
	bob.waitVisible(ringing(timedOut, ""))
	bob.waitGone(ringing(timedOut, ""))
	bob.waitText(card(timedOut, userState("bob")), "timeout")
	alice.waitText(card(timedOut, userState("bob")), "timeout")
	alice.waitText(card(timedOut, callState), "ended")

	// A network drop: the server restarts under the pages. While bob's page
	// is away, alice calls him and cancels; bob's page reconnects by itself
	// and resumes after the last event it had, so it learns both (a new
	// stream would only replay invitations still pending).
	s.Restart()
	dropped := alice.call("bob", "general", 30)
	alice.click(card(dropped, `[data-testid=cancel]`))
	alice.waitText(card(dropped, userState("bob")), "cancelled")
	event := func(typ, callID string) string {
		return `[data-testid=event-log] li[data-event=` + typ + `][data-call-id=` + quote(callID) + `]`
	}
	bob.waitVisible(event("callInvitationCancelled", dropped))
	bob.waitVisible(event("callInvitationReceived", dropped))
	bob.waitText(card(dropped, userState("bob")), "cancelled")
	bob.waitText(`[data-testid=connection]`, "connected")
	alice.waitText(`[data-testid=connection]`, "connected")

	// Past calls, newest first, four at a time: the fifth is the first call.
	alice.click(`[data-testid=history-refresh]`)
	alice.waitCount(`[data-testid=history-item]`, 4)
	alice.waitVisible(`[data-testid=load-more]`)
	alice.click(`[data-testid=load-more]`)
	alice.waitCount(`[data-testid=history-item]`, 5)
	alice.waitGone(`[data-testid=load-more]:not([hidden])`)
	alice.waitVisible(`[data-testid=history-item]:last-child[data-call-id=` + quote(general) + `]`)
}

// The demo is served without a token, with the content types, caching and
// security headers the page relies on, and answers as the spec says (the
// test client checks every response against api/openapi.yaml).
func TestDemoPageServed(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	anon := s.Client("nobody")
	anon.Token = ""
	for path, ctype := range map[string]string{
		"/demo/":          "text/html; charset=utf-8",
		"/demo/app.js":    "text/javascript; charset=utf-8",
		"/demo/style.css": "text/css; charset=utf-8",
	} {
		res := anon.Get(path).Want(http.StatusOK)
		if got := res.Header.Get("Content-Type"); got != ctype {
			t.Errorf("%s: Content-Type %q, want %q", path, got, ctype)
		}
		if got := res.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s: Cache-Control %q, want no-cache", path, got)
		}
	}
	page := anon.Get("/demo/")
	if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	anon.Get("/demo/nope.js").WantProblem(http.StatusNotFound, "not_found")

	// A server with a configured secret mints no tokens: the page says so.
	anon.Post("/dev/token", map[string]any{"userID": "alice"}).WantProblem(http.StatusNotFound, "not_found")
}
