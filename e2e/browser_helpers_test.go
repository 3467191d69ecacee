package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser test drives Debian's Chromium; it never downloads a browser.
const (
	chromiumPath = "/usr/bin/chromium"
	skipBrowser  = "CALLSIG_SKIP_BROWSER"
	// browserWait bounds every wait on the page: long enough for a loaded
	// machine, short enough that a broken page fails fast.
	browserWait = 10 * time.Second
)

// findChromium returns the Chromium to drive, or skips or fails the test
// with what to do when there is none. CALLSIG_SKIP_BROWSER=1 skips.
func findChromium(t *testing.T) string {
	t.Helper()
	path := chromiumPath
	if _, err := os.Stat(path); err != nil {
		path, _ = exec.LookPath("chromium")
	}
	if os.Getenv(skipBrowser) == "1" {
		if path == "" {
			t.Skipf("%s=1 and Chromium is not installed: skipping the browser test", skipBrowser)
		}
		t.Skipf("%s=1: skipping the browser test", skipBrowser)
	}
	if path == "" {
		t.Fatalf("the browser test needs Chromium at %s and found none: install it with `apt-get install -y chromium` "+
			"(Debian/Ubuntu), or set %s=1 to skip this test", chromiumPath, skipBrowser)
	}
	return path
}

// startBrowser starts one headless Chromium for the test, with a fresh
// profile, and returns its context; pages are tabs in it.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := findChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Every tab keeps running at full speed although only one is in front.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		t.Logf("chromedp: "+format, args...)
	}))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no deadline
		t.Fatalf("start Chromium (%s): %v", exe, err)
	}
	return ctx
}

// page is one signed-in tab of the demo, in a browser context of its own
// (its own cookies and storage: another person at another computer).
type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu     sync.Mutex
	errors []string // uncaught exceptions in the page
}

// openDemo opens the demo page in a new browser context.
func openDemo(t *testing.T, browser context.Context, baseURL, name string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	p := &page{t: t, name: name, ctx: ctx}
	// The first run opens the tab and ties it to the context it gets: ctx
	// itself, not one of the short-lived contexts of the waits below.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("open a tab for %s: %v", name, err)
	}
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.IsException() {
				p.mu.Lock()
				p.errors = append(p.errors, m.String())
				p.mu.Unlock()
			}
		}
	}()
	p.run("open "+baseURL+"/demo/", chromedp.Navigate(baseURL+"/demo/"))
	t.Cleanup(p.checkExceptions)
	return p
}

func (p *page) checkExceptions() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.errors {
		p.t.Errorf("%s's page threw: %s", p.name, e)
	}
}

// run runs actions with the page's wait deadline and fails the test, with
// what the page shows, when one does not complete.
func (p *page) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail(what, err)
	}
}

// fail reports a failed step with the page's errors and latest events.
func (p *page) fail(what string, err error) {
	p.t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("not within %s", browserWait)
	}
	ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
	defer cancel()
	state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const text = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent.trim()).join('\n');
		return 'connection: ' + text('[data-testid=connection]') +
			'\nerrors shown:\n' + text('[data-testid=error]') +
			'\ncalls:\n' + [...document.querySelectorAll('.call-card')].map((c) =>
				c.dataset.callId + ' ' + c.querySelector('[data-testid=call-state]').textContent + ' ' +
				[...c.querySelectorAll('[data-testid^=user-state-]')].map((u) => u.dataset.testid.slice(11) + '=' + u.textContent).join(' ')).join('\n') +
			'\nevents (newest first):\n' + [...document.querySelectorAll('[data-testid=event-log] li')].slice(0, 12).map((li) => li.textContent).join('\n');
	})()`))
	p.t.Fatalf("%s's page: %s: %v\n%s", p.name, what, err, state)
}

// quote makes a double-quoted string of v, for a CSS attribute selector
// or a JavaScript literal (both escape the same two characters).
func quote(v string) string { return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"` }

// card is the selector of the call card of callID; sub narrows it.
func card(callID, sub string) string {
	return strings.TrimSpace(`.call-card[data-call-id=` + quote(callID) + `] ` + sub)
}

// ringing is the selector of the incoming-call card of callID; sub narrows it.
func ringing(callID, sub string) string {
	return strings.TrimSpace(`[data-testid=incoming-call][data-call-id=` + quote(callID) + `] ` + sub)
}

// waitText waits until the element sel exists and its text is want.
func (p *page) waitText(sel, want string) {
	p.t.Helper()
	p.run(fmt.Sprintf("wait for %s to read %q", sel, want),
		chromedp.PollFunction[chromedp.Void](`(sel, want) => {
			const el = document.querySelector(sel);
			return !!el && el.textContent.trim() === want;
		}`, chromedp.WithPollingArgs(sel, want), chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(0)))
}

// waitGone waits until no element matches sel.
func (p *page) waitGone(sel string) {
	p.t.Helper()
	p.run("wait for "+sel+" to go away",
		chromedp.PollFunction[chromedp.Void](`(sel) => !document.querySelector(sel)`,
			chromedp.WithPollingArgs(sel), chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(0)))
}

// waitCount waits until exactly n elements match sel.
func (p *page) waitCount(sel string, n int) {
	p.t.Helper()
	p.run(fmt.Sprintf("wait for %d of %s", n, sel),
		chromedp.PollFunction[chromedp.Void](`(sel, n) => document.querySelectorAll(sel).length === n`,
			chromedp.WithPollingArgs(sel, n), chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(0)))
}

// waitVisible waits until sel is shown.
func (p *page) waitVisible(sel string) {
	p.t.Helper()
	p.run("wait for "+sel+" to show", chromedp.WaitVisible(chromedp.CSS(sel)))
}

// click clicks the element sel once it is shown, as a person would. The
// page redraws a card when its call changes, so a node found can be gone
// by the time it is clicked: then it looks again.
func (p *page) click(sel string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	for {
		err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
		if err == nil {
			return
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "Could not find node") {
			p.fail("click "+sel, err)
		}
	}
}

// fill replaces the value of the input sel.
func (p *page) fill(sel, value string) {
	p.t.Helper()
	p.run("fill "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), value))
}

// typeInto types text into the input sel, key by key.
func (p *page) typeInto(sel, text string) {
	p.t.Helper()
	p.run("type into "+sel, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SendKeys(chromedp.CSS(sel), text))
}

// text returns the text of sel.
// eval evaluates js in the page, awaiting the promise it may return, and
// returns its string.
func (p *page) eval(what, js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fail(what, err)
	}
	return v
}

func (p *page) text(sel string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+quote(sel)+`) || {}).textContent || ''`))
	if err != nil {
		p.fail("read "+sel, err)
	}
	return strings.TrimSpace(s)
}

// signIn signs in as user through the form and waits for the event stream.
func (p *page) signIn(user string) {
	p.t.Helper()
	p.fill(`[data-testid=login-user]`, user)
	p.click(`[data-testid=login-submit]`)
	p.waitText(`[data-testid=me]`, user)
	p.waitText(`[data-testid=connection]`, "connected")
}

// call places a call through the form and returns its ID once the page
// shows it; timeout 0 leaves the field empty (the server's default).
func (p *page) call(invitees, mode string, timeout int) string {
	p.t.Helper()
	before := p.text(`[data-testid=last-call-id]`)
	p.fill(`[data-testid=invitees]`, invitees)
	p.fill(`[data-testid=mode]`, mode)
	t := ""
	if timeout > 0 {
		t = fmt.Sprint(timeout)
	}
	p.fill(`[data-testid=timeout]`, t)
	p.click(`[data-testid=call-submit]`)
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	id, err := chromedp.Run(ctx, chromedp.PollFunction[string](`(before) => {
		const id = document.querySelector('[data-testid=last-call-id]').textContent.trim();
		return id !== before && document.querySelector('.call-card[data-call-id="' + id + '"]') ? id : false;
	}`, chromedp.WithPollingArgs(before), chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(0)))
	if err != nil {
		p.fail("place a call to "+invitees, err)
	}
	return id
}

// screenshot saves the page as name in the test's temp folder, or as
// docs/name with CALLSIG_UPDATE_DOCS=1: a test run must not rewrite the
// repository's files by itself (every run would leave docs/demo.png changed).
func (p *page) screenshot(name string) {
	p.t.Helper()
	path := filepath.Join(p.t.TempDir(), name)
	if os.Getenv("CALLSIG_UPDATE_DOCS") == "1" {
		path = filepath.Join("..", "docs", name)
	}
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fail("screenshot", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("save screenshot: %v", err)
	}
}
