package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// The demo page, built on the JavaScript client, renews its token when the
// server warns that it will expire: it takes a fresh token from its
// tokenProvider and opens the next stream from the last event before the
// server ends the old one. Nothing is missed or shown twice, and the page
// never shows itself reconnecting. The server runs on the fake clock, so
// the hour of a development token passes at once.
func TestBrowserTokenRenewal(t *testing.T) {
	browser := startBrowser(t)
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.JWTSecret = "" }))
	alice := openDemo(t, browser, s.URL, "alice")
	bob := openDemo(t, browser, s.URL, "bob")
	alice.signIn("alice")
	bob.signIn("bob")
	const accept = `[data-testid=accept]`
	// Development tokens are minted on the wall clock with whole-second
	// exps; the fake clock's hour passes in no wall time, so a token minted
	// in the sign-in's second would expire with the old one, and the client
	// reopens its stream only with a token that expires later.
	signedIn := time.Now().Unix()
	wait.For(t, 3*time.Second, "the wall clock's next second", func() bool { return time.Now().Unix() > signedIn })

	s.Advance(time.Hour - 30*time.Second) // development tokens live an hour
	const warned = `[data-testid=event-log] li[data-event=tokenWillExpire]`
	alice.waitVisible(warned)
	bob.waitVisible(warned)
	// Calls right after the warning, then after the old tokens' exp.
	during := alice.call("bob", "general", 600)
	bob.waitVisible(ringing(during, ""))
	alice.click(card(during, `[data-testid=cancel]`))
	// Alice's page first: a cancel that failed (shown in her page's
	// errors) is then told apart from an event bob's stream missed. One
	// fresh-clone CI run saw bob's page without the cancellation, with
	// nothing to say which.
	alice.waitText(card(during, `[data-testid=user-state-bob]`), "cancelled")
	bob.waitText(card(during, `[data-testid=user-state-bob]`), "cancelled")
	s.Advance(30 * time.Second) // the old streams end now, if still open
	after := alice.call("bob", "general", 600)
	bob.click(ringing(after, accept))
	alice.waitText(card(after, `[data-testid=user-state-bob]`), "accepted")
	bob.waitText(card(after, `[data-testid=call-state]`), "ended")

	for _, p := range []*page{alice, bob} {
		p.waitText(`[data-testid=connection]`, "connected")
		ctx, cancel := context.WithTimeout(p.ctx, browserWait)
		report, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
			const ids = [...document.querySelectorAll('[data-testid=event-log] li[data-event-id]')]
				.map((li) => li.dataset.eventId).filter(Boolean);
			if (new Set(ids).size !== ids.length) return 'an event shown twice: ' + ids.join(' ');
			const notes = [...document.querySelectorAll('[data-testid=event-log] li.note')].map((li) => li.textContent);
			if (notes.some((n) => n.includes('reconnecting'))) return 'the stream was seen reconnecting: ' + notes.join(' | ');
			return '';
		})()`))
		cancel()
		if err != nil || report != "" {
			t.Errorf("%s's page: %s %v", p.name, report, err)
		}
	}
}
