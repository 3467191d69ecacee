package handlers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"callsig/internal/fakeclock"
)

func TestRateLimiterBucket(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(2, 3, clock.Now) // 2/s, bursts of 3
	for i := range 3 {
		if ok, _ := l.allow("alice"); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("alice")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("over burst: ok=%v wait=%v, want refused for 500ms", ok, wait)
	}
	if ok, _ := l.allow("bob"); !ok {
		t.Fatal("bob limited by alice's bucket")
	}
	clock.Advance(500 * time.Millisecond)
	if ok, _ := l.allow("alice"); !ok {
		t.Fatal("token not refilled after 500ms")
	}
	if ok, _ := l.allow("alice"); ok {
		t.Fatal("more than one token refilled after 500ms")
	}
	// Refill caps at the burst.
	clock.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.allow("alice"); !ok {
			t.Fatalf("request %d after a long pause refused", i)
		}
	}
	if ok, _ := l.allow("alice"); ok {
		t.Fatal("bucket grew beyond its burst")
	}
}

func TestRateLimiterSweep(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(1, 0, clock.Now) // burst defaults to 1
	l.allow("alice")
	l.allow("bob")
	clock.Advance(2 * sweepEvery)
	l.allow("carol") // triggers the sweep; alice and bob have refilled
	if len(l.buckets) != 1 || l.buckets["carol"] == nil {
		t.Fatalf("buckets after sweep: %v", l.buckets)
	}
}

func TestRateLimitMiddleware(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(0.5, 1, clock.Now)
	h := newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(false)(l.middleware(whoAmI))
	call := func() *httptest.ResponseRecorder { return aliceGets(t, h) }
	if w := call(); w.Code != http.StatusOK {
		t.Fatalf("first request: %d", w.Code)
	}
	wantRateLimited(t, call(), "2")
	clock.Advance(2 * time.Second)
	if w := call(); w.Code != http.StatusOK {
		t.Fatalf("after waiting: %d", w.Code)
	}
}

// A stream over the limit gets an empty stream, not 429: EventSource gives
// up for good on any status but 200, and reconnects after a stream that
// ends, here once the wait is over (retry), from the id it had.
func TestRateLimitedStreamIsAnEmptyStream(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(0.5, 1, clock.Now)
	h := newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(true)(l.middleware(whoAmI))
	open := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", eventsRoute+"?access_token="+token(t, "alice", nil), nil)
		r.Header.Set("Last-Event-ID", "42")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := open(); w.Code != http.StatusOK || w.Header().Get("Content-Type") == "text/event-stream" {
		t.Fatalf("first stream: %d %q, want it passed on", w.Code, w.Header().Get("Content-Type"))
	}
	w := open()
	body := w.Body.String()
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "text/event-stream" ||
		!strings.Contains(body, "retry: 2000\n") || !strings.Contains(body, "id: 42\n") ||
		!strings.Contains(body, "event: refused\ndata: {\"retry\":2000,\"reason\":\"rate limit exceeded; reconnect later\"}\n") {
		t.Fatalf("stream over the limit: %d %q %q, want 200, an empty stream with retry: 2000, id: 42 and the refused event", w.Code, w.Header().Get("Content-Type"), body)
	}
}

// A large answer costs a token per bytesPerToken: a user within the
// request rate who asks for megabytes waits for them, and a small answer
// costs its one token as before.
func TestRateLimitChargesLargeAnswers(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(1, 1, clock.Now)
	size := 0
	h := newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(false)(l.middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, size))
	})))
	call := func() *httptest.ResponseRecorder { return aliceGets(t, h) }
	size = 1000
	for range 3 {
		if w := call(); w.Code != http.StatusOK {
			t.Fatalf("a small answer a second: %d", w.Code)
		}
		clock.Advance(time.Second)
	}
	size = 3*bytesPerToken + 10 // its token, and 3 more
	if w := call(); w.Code != http.StatusOK {
		t.Fatalf("the large answer: %d", w.Code)
	}
	clock.Advance(time.Second)
	// The bucket held -1 after the large answer's second: 3 more tokens,
	// capped at minus the burst.
	wantRateLimited(t, call(), "1")
	clock.Advance(2 * time.Second)
	if w := call(); w.Code != http.StatusOK {
		t.Fatalf("once the cost is paid: %d", w.Code)
	}
}

// An answer is charged before it is written: one whose client does not
// read it, its write blocked, already holds its user back. Charged after
// the write, a user had as many such answers pending as the request rate
// let through, each holding its memory and connection (a review: 150
// unread pages of 13 MB).
func TestRateLimitChargesAnAnswerBeforeWritingIt(t *testing.T) {
	clock := fakeclock.New(time.Unix(1000, 0))
	l := newRateLimiter(1, 2, clock.Now)
	h := newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(false)(l.middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 4*bytesPerToken))
	})))
	r := httptest.NewRequest("GET", "/calls", nil)
	r.Header.Set("Authorization", "Bearer "+token(t, "alice", nil))
	w := &blockedWriter{ResponseRecorder: httptest.NewRecorder(), entered: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() { defer close(done); h.ServeHTTP(w, r) }()
	<-w.entered // the answer's write is blocked: the client reads nothing
	wantRateLimited(t, aliceGets(t, h), "3")
	close(w.release)
	<-done
}

// blockedWriter's Write waits for release, as a write to a client that
// does not read does.
type blockedWriter struct {
	*httptest.ResponseRecorder
	entered, release chan struct{}
}

func (w *blockedWriter) Write(b []byte) (int, error) {
	close(w.entered)
	<-w.release
	return w.ResponseRecorder.Write(b)
}

// aliceGets sends GET /calls as alice through h.
func aliceGets(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", "/calls", nil)
	r.Header.Set("Authorization", "Bearer "+token(t, "alice", nil))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// wantRateLimited checks a 429 rate_limited with Retry-After want.
func wantRateLimited(t *testing.T, w *httptest.ResponseRecorder, want string) {
	t.Helper()
	decodeProblem(t, w, 429, "rate_limited")
	if got := w.Header().Get("Retry-After"); got != want {
		t.Fatalf("Retry-After = %q, want %s", got, want)
	}
}
