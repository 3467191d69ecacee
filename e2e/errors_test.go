package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// Every error code of the contract, reached over real HTTP, as a clear
// problem+json body that matches the spec.
func TestErrorCodes(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	alice, bob := s.Client("alice"), s.Client("bob")
	general := alice.Invite(nil, "bob").CallID
	advanced := alice.Invite(map[string]any{"mode": "advanced"}, "bob", "carol").CallID
	ended := alice.Invite(nil, "dave").CallID
	s.Client("dave").Action(ended, "reject", nil).Want(http.StatusOK)

	raw := func(c *testkit.Client, method, path, contentType, body string) *testkit.Response {
		cp := *c
		cp.Header = c.Header.Clone()
		if contentType != "" {
			cp.Header.Set("Content-Type", contentType)
		}
		return cp.Do(method, path, body)
	}
	anon := &testkit.Client{Header: http.Header{}}
	*anon = *s.Client("x")
	anon.Token = ""

	tests := []struct {
		name   string
		do     func() *testkit.Response
		status int
		code   string
	}{
		{"malformed JSON", func() *testkit.Response { return raw(alice, "POST", "/calls", "", `{"invitees":`) }, 400, "invalid_request"},
		{"ten invitees", func() *testkit.Response {
			return alice.Post("/calls", map[string]any{"invitees": []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}})
		}, 400, "invalid_request"},
		{"duplicate invitee", func() *testkit.Response {
			return alice.Post("/calls", map[string]any{"invitees": []string{"bob", "bob"}})
		}, 400, "invalid_request"},
		{"inviting yourself", func() *testkit.Response { return alice.Post("/calls", map[string]any{"invitees": []string{"alice"}}) }, 400, "invalid_request"},
		{"bad user ID", func() *testkit.Response {
			return alice.Post("/calls", map[string]any{"invitees": []string{"bob smith"}})
		}, 400, "invalid_request"},
		{"timeout out of range", func() *testkit.Response {
			return alice.Post("/calls", map[string]any{"invitees": []string{"bob"}, "timeout": 601})
		}, 400, "invalid_request"},
		{"extendedData too long", func() *testkit.Response {
			return alice.Post("/calls", map[string]any{"invitees": []string{"bob"}, "extendedData": strings.Repeat("é", 1500)})
		}, 400, "invalid_request"},
		{"unknown field", func() *testkit.Response { return alice.Post("/calls", map[string]any{"invitee": []string{"bob"}}) }, 400, "invalid_request"},
		{"no token", func() *testkit.Response { return anon.Get("/calls") }, 401, "unauthorized"},
		{"expired token", func() *testkit.Response {
			c := *alice
			c.Token = token(t, s, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()}, jwt.SigningMethodHS256)
			return c.Get("/calls")
		}, 401, "unauthorized"},
		{"token without exp", func() *testkit.Response {
			c := *alice
			c.Token = token(t, s, jwt.MapClaims{"sub": "alice"}, jwt.SigningMethodHS256)
			return c.Get("/calls")
		}, 401, "unauthorized"},
		{"token not valid before a time past int64", func() *testkit.Response {
			c := *alice
			c.Token = token(t, s, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "nbf": 1e300}, jwt.SigningMethodHS256)
			return c.Get("/calls")
		}, 401, "unauthorized"},
		{"alg none", func() *testkit.Response {
			c := *alice
			c.Token = token(t, s, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}, jwt.SigningMethodNone)
			return c.Get("/calls")
		}, 401, "unauthorized"},
		{"cancel someone else's invitee", func() *testkit.Response {
			bob.Action(advanced, "accept", nil).Want(http.StatusOK)
			return bob.Action(advanced, "cancel", map[string]any{"invitees": []string{"carol"}})
		}, 403, "forbidden"},
		{"admin endpoint as a user", func() *testkit.Response { return alice.Get("/webhooks") }, 403, "forbidden"},
		{"unknown call", func() *testkit.Response { return alice.Get("/calls/nosuchcall0123456789") }, 404, "call_not_found"},
		{"someone else's call", func() *testkit.Response { return s.Client("eve").Action(general, "accept", nil) }, 404, "call_not_found"},
		{"unknown route", func() *testkit.Response { return alice.Get("/nope") }, 404, "not_found"},
		{"wrong method", func() *testkit.Response { return alice.Do("DELETE", "/calls", nil) }, 405, "method_not_allowed"},
		{"advanced action on a general call", func() *testkit.Response { return alice.Action(general, "end", nil) }, 409, "wrong_mode"},
		{"caller accepts own call", func() *testkit.Response { return alice.Action(general, "accept", nil) }, 409, "invalid_state"},
		{"action on an ended call", func() *testkit.Response { return s.Client("dave").Action(ended, "accept", nil) }, 409, "call_ended"},
		{"join from the main device again", func() *testkit.Response { return bob.Action(advanced, "join", nil) }, 409, "already_in_call"},
		{"idempotency key reused with another body", func() *testkit.Response {
			c := *alice
			c.Header = http.Header{"Idempotency-Key": {"k-1"}}
			c.Post("/calls", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusCreated)
			return c.Post("/calls", map[string]any{"invitees": []string{"carol"}})
		}, 422, "idempotency_conflict"},
		{"body over 1 MiB", func() *testkit.Response {
			return raw(alice, "POST", "/calls", "", `{"extendedData":"`+strings.Repeat("x", 2<<20)+`"}`)
		}, 413, "payload_too_large"},
		{"not JSON", func() *testkit.Response { return raw(alice, "POST", "/calls", "text/plain", "invitees=bob") }, 415, "unsupported_media_type"},
		// A query string that does not parse is refused, not read as if
		// the bad pairs were absent (the default page, a fresh stream).
		{"malformed query escape", func() *testkit.Response { return alice.Get("/calls?count=%zz") }, 400, "invalid_request"},
		{"query with a semicolon", func() *testkit.Response { return alice.Get("/calls?count=1;x=1") }, 400, "invalid_request"},
		{"malformed query on a stream", func() *testkit.Response { return alice.Get("/events?lastEventID=5%") }, 400, "invalid_request"},
		{"malformed query, admin", func() *testkit.Response { return s.Admin().Get("/webhooks?x=%") }, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.do().WantProblem(tt.status, tt.code)
			if p.Title == "" || p.Type == "" {
				t.Errorf("problem without title or type: %+v", p)
			}
		})
	}
}

// The per-user rate limit answers 429 with Retry-After.
func TestRateLimited(t *testing.T) {
	t.Parallel()
	// A bucket that barely refills (a token every 100 s): however slowly a
	// loaded machine runs the five requests, the third finds it empty.
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.RateLimit, c.RateBurst = 0.01, 2 }))
	alice := s.Client("alice")
	var last *testkit.Response
	for range 5 {
		if last = alice.Get("/calls"); last.Status == http.StatusTooManyRequests {
			break
		}
	}
	last.WantProblem(http.StatusTooManyRequests, "rate_limited")
	if last.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Other users are not affected.
	s.Client("bob").Get("/calls").Want(http.StatusOK)
}

// A stream's replay of the log counts against its user's rate limit by
// its bytes, as an answer's body does: a user reconnecting from an old id
// replayed its whole kept log for one request's token each (a review: 8
// MB/s within a limit that holds answers to 3.2 MB/s).
func TestStreamReplayIsCharged(t *testing.T) {
	t.Parallel()
	// A bucket that barely refills (a token every 100 s), big enough that
	// nothing here waits: what is left at the end is what was charged, however
	// slowly the machine ran the test (at a token a second, a slow run
	// refilled the difference and passed a server that did not charge).
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.RateLimit, c.RateBurst = 0.01, 26 }))
	mallory := s.Client("mallory")
	// Each callInvitationCreated holds it twice (the call's and the
	// caller's), each control character escaped to six bytes: 15 of them
	// are some 370 KB, about 6 requests' worth at 64 KiB.
	big := strings.Repeat("\x01", 2048)
	for i := range 15 {
		mallory.Invite(map[string]any{"extendedData": big, "timeout": 600}, fmt.Sprintf("ghost-%d", i))
	}
	log := s.Log("mallory")
	st := s.Stream("mallory", "", fmt.Sprint(log[0].ID-1))
	st.WaitFor("callInvitationCreated", func(e testkit.Event) bool { return e.ID() == log[len(log)-1].ID }, 5*time.Second)
	st.Close()
	// 26 − 15 creates − 1 stream left 10 for requests, less the replay's
	// 6 or so: about 4 pass before the bucket is empty.
	passed := 0
	for ; passed < 12; passed++ {
		r := mallory.Get("/calls?count=1")
		if r.Status == http.StatusTooManyRequests {
			r.WantProblem(http.StatusTooManyRequests, "rate_limited")
			break
		}
		r.Want(http.StatusOK)
	}
	if passed < 2 || passed > 7 {
		t.Fatalf("%d requests passed after the replay, want 2–7 (10 if the replay was not charged)", passed)
	}
}

// A new stream's opening replays the invitations still pending for its
// user (the newest 100) from the log, and that counts against the user's
// rate limit by its bytes as a resume's replay does: it went uncounted, so
// a user whose friends had invited it to 100 calls with the largest
// extendedData (some 25 KB an invitation, its control characters escaped)
// got 2.5 MB a stream for one request's token, 50 streams a second within
// the default limit: 125 MB/s where answers are held to 3.2 MB/s.
func TestStreamPendingReplayIsCharged(t *testing.T) {
	t.Parallel()
	// As in TestStreamReplayIsCharged: a bucket that barely refills, so
	// what is left at the end is what was charged.
	s := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.RateLimit, c.RateBurst = 0.01, 12 }))
	// 15 callers (each its own bucket) invite mallory once each: some
	// 370 KB of pending invitations, about 6 requests' worth at 64 KiB.
	big := strings.Repeat("\x01", 2048)
	for i := range 15 {
		s.Client(fmt.Sprintf("friend-%d", i)).Invite(map[string]any{"extendedData": big, "timeout": 600}, "mallory")
	}
	st := s.Stream("mallory", "", "")
	wait.For(t, 5*time.Second, "the opening's synced event", func() bool { return st.Synced() == 1 })
	invitations := 0
	for _, e := range st.Pending() {
		if e.Type == string(calls.EventReceived) {
			invitations++
		}
	}
	if invitations != 15 {
		t.Fatalf("the opening replayed %d invitations, want 15", invitations)
	}
	st.Close()
	// 12 − 1 stream left 11 for requests, less the opening's 6 or so:
	// about 5 pass before the bucket is empty.
	mallory := s.Client("mallory")
	passed := 0
	for ; passed < 12; passed++ {
		r := mallory.Get("/calls?count=1")
		if r.Status == http.StatusTooManyRequests {
			r.WantProblem(http.StatusTooManyRequests, "rate_limited")
			break
		}
		r.Want(http.StatusOK)
	}
	if passed < 2 || passed > 7 {
		t.Fatalf("%d requests passed after the opening, want 2–7 (11 if its pending invitations were not charged)", passed)
	}
}

// An Idempotency-Key stores what the service answered, refusals included,
// but not a request refused for its form before it ran (the spec's schema):
// the same key with the body corrected acts, as with Stripe's keys.
func TestIdempotencyKeyOfARefusal(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	alice := s.Client("alice")
	alice.SkipSpec = true // the first body breaks the spec on purpose
	alice.Header.Set("Idempotency-Key", "k-schema")
	alice.Post("/calls", map[string]any{"invitees": []string{}}).WantProblem(http.StatusBadRequest, "invalid_request")
	alice.Post("/calls", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusCreated)
	// Refused by the service: stored, and the key is spent.
	alice.Header.Set("Idempotency-Key", "k-self")
	alice.Post("/calls", map[string]any{"invitees": []string{"alice"}}).WantProblem(http.StatusBadRequest, "invalid_request")
	alice.Post("/calls", map[string]any{"invitees": []string{"bob"}}).WantProblem(http.StatusUnprocessableEntity, "idempotency_conflict")
}

// A repeated POST with the same Idempotency-Key returns the first answer
// and creates nothing new.
func TestIdempotentInvite(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, backend)
		alice := s.Client("alice")
		alice.Header.Set("Idempotency-Key", "invite-bob-1")
		first := alice.Post("/calls", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusCreated)
		again := alice.Post("/calls", map[string]any{"invitees": []string{"bob"}}).Want(http.StatusCreated)
		if string(first.Body) != string(again.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay differs:\n%s\n%s (replayed=%q)", first.Body, again.Body, again.Header.Get("Idempotent-Replayed"))
		}
		var list struct{ CallList []testkit.Call }
		s.Client("bob").Get("/calls").Want(http.StatusOK).JSON(&list)
		if len(list.CallList) != 1 {
			t.Fatalf("bob is in %d calls, want 1", len(list.CallList))
		}
		// The key is per user: bob may use the same key for his own request.
		bob := s.Client("bob")
		bob.Header.Set("Idempotency-Key", "invite-bob-1")
		bob.Post("/calls", map[string]any{"invitees": []string{"carol"}}).Want(http.StatusCreated)
	})
}

func token(t *testing.T, s *testkit.Server, claims jwt.MapClaims, m jwt.SigningMethod) string {
	t.Helper()
	key := any(s.App.Secret)
	if m == jwt.SigningMethodNone {
		key = jwt.UnsafeAllowNoneSignatureType
	}
	tok, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A NUL (U+0000) in free text is a 400 on every backend: it is stored as
// text, which PostgreSQL cannot hold one in (it was a 500 there, and a
// SQLite file holding one could not be moved to PostgreSQL).
func TestNULInFreeTextIsRefused(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
		alice, bob := s.Client("alice"), s.Client("bob")
		p := alice.Post("/calls", map[string]any{"invitees": []string{"bob"}, "extendedData": "a\x00b"}).
			WantProblem(http.StatusBadRequest, "invalid_request")
		if len(p.Errors) == 0 || p.Errors[0].Field != "extendedData" {
			t.Fatalf("problem %+v, want it to name extendedData", p)
		}
		id := alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
		bob.Action(id, "accept", map[string]any{"extendedData": "\x00"}).WantProblem(http.StatusBadRequest, "invalid_request")
		bob.Action(id, "accept", map[string]any{"extendedData": "ok"}).Want(http.StatusOK)
		s.Admin().Post("/webhooks", map[string]any{"url": "https://example.com/hook", "description": "x\x00"}).
			WantProblem(http.StatusBadRequest, "invalid_request")
	})
}

// A replayed refusal carries the headers of the first answer: the
// problem's X-Content-Type-Options was missing from the replay.
func TestReplayedProblemKeepsItsHeaders(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	bob := s.Client("bob")
	bob.Header.Set("Idempotency-Key", "nf")
	first := bob.Post("/calls/nosuchcall/accept", map[string]any{})
	again := bob.Post("/calls/nosuchcall/accept", map[string]any{})
	if again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("not replayed")
	}
	for _, h := range []string{"Content-Type", "X-Content-Type-Options", "Content-Length"} {
		if first.Header.Get(h) != again.Header.Get(h) {
			t.Errorf("%s: first %q, replay %q", h, first.Header.Get(h), again.Header.Get(h))
		}
	}
	if string(first.Body) != string(again.Body) || first.Status != again.Status {
		t.Errorf("body/status differ")
	}
}

// The device is part of what an Idempotency-Key stands for: it decides
// which device becomes the main one. An accept retried from another
// device under the same key is another request (422), not a replay of the
// first device's answer, which told the second device it had accepted
// while its own accept never ran. The first device's retry still replays.
func TestIdempotencyKeyCoversTheDevice(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
		id := s.Client("alice").Invite(nil, "bob").CallID
		phone, tablet := s.Client("bob").OnDevice("phone"), s.Client("bob").OnDevice("tablet")
		phone.Header.Set("Idempotency-Key", "accept-"+id)
		tablet.Header.Set("Idempotency-Key", "accept-"+id)
		phone.Action(id, "accept", nil).Want(http.StatusOK)
		tablet.Action(id, "accept", nil).WantProblem(http.StatusUnprocessableEntity, "idempotency_conflict")
		if res := phone.Action(id, "accept", nil).Want(http.StatusOK); res.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("the phone's retry was not replayed: %v", res.Header)
		}
	})
}

// A timeout written as 90.0 (Python's json.dumps of a float) is the
// integer 90 to the spec's validation and to the server alike; 90.5 is
// refused with the field named.
func TestTimeoutWrittenAsAFloat(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	alice := s.Client("alice")
	res := alice.Post("/calls", json.RawMessage(`{"invitees":["bob"],"timeout":90.0}`))
	if res.Status != http.StatusCreated || !strings.Contains(string(res.Body), `"timeout":90`) {
		t.Fatalf("timeout 90.0: %d %s, want 201 with timeout 90", res.Status, res.Body)
	}
	alice.Post("/calls", json.RawMessage(`{"invitees":["bob"],"timeout":90.5}`)).WantProblem(http.StatusBadRequest, "invalid_request")
}

// Markup in extendedData reaches the answer and the invitee's event as it
// was sent: not as six-byte escapes of <, > and & (2 KiB of "<" made a
// 12-KiB field in every copy).
func TestMarkupIsNotEscaped(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	bob := listen(t, s, "bob", "")
	const ext = `<b>hi</b> & bye`
	res := s.Client("alice").Post("/calls", map[string]any{"invitees": []string{"bob"}, "extendedData": ext})
	if res.Status != http.StatusCreated || !strings.Contains(string(res.Body), `"extendedData":"<b>hi</b> & bye"`) {
		t.Fatalf("answer %d %s, want the extendedData as sent", res.Status, res.Body)
	}
	var id string
	if err := json.Unmarshal(res.Body, &struct {
		CallID *string `json:"callID"`
	}{&id}); err != nil {
		t.Fatal(err)
	}
	ev := bob.expect(ev(calls.EventReceived, id))[0]
	if !strings.Contains(ev.Data, `"extendedData":"<b>hi</b> & bye"`) {
		t.Fatalf("bob's event %s, want the extendedData as sent", ev.Data)
	}
}
