package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// A stream answers at once with the event-stream headers and a retry hint,
// and accepts the token in the query for EventSource.
func TestEventStreamOpens(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())

	st := s.Stream("alice", "", "")
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := st.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	wait.For(t, eventWait, "the retry hint", func() bool { return st.Retry() > 0 })

	// EventSource cannot send headers: the token comes as ?access_token=.
	q := s.OpenStream(testkit.StreamOptions{User: "bob", NoAuthHeader: true, Query: url.Values{"access_token": {s.Token("bob")}}})
	id := s.Client("alice").Invite(nil, "bob").CallID
	if e := q.Next(eventWait); e.Type != string(calls.EventReceived) || e.CallID() != id {
		t.Fatalf("bob with ?access_token= got %v", e)
	}

	res := s.StreamResponse(testkit.StreamOptions{User: "bob", NoAuthHeader: true})
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"unauthorized"`) {
		t.Fatalf("no token: %d %s", res.StatusCode, body)
	}
	res = s.StreamResponse(testkit.StreamOptions{User: "bob", Device: "bad device!"})
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid deviceID: %d", res.StatusCode)
	}
}

// Every event of the contract's table reaches exactly its recipients, in
// commit order, with ids that only increase; an outsider hears nothing. A
// last invitation to everyone is the marker that proves nobody got more.
func TestEveryEventReachesExactlyItsRecipients(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		users := []string{"alice", "bob", "carol", "dave", "erin", "olivia"}
		ls := map[string]*listener{}
		for _, u := range users {
			ls[u] = listen(t, s, u, "")
		}
		alice, bob, carol, dave, erin, olivia := ls["alice"], ls["bob"], ls["carol"], ls["dave"], ls["erin"], ls["olivia"]
		api := func(u string) *testkit.Client { return s.Client(u) }

		// General mode: invite, deliveries, reject, cancel, timeout.
		c1 := api("alice").Invite(map[string]any{"timeout": 30}, "bob", "carol", "dave").CallID
		delivered := []desc{changed(c1, "bob=received"), changed(c1, "carol=received"), changed(c1, "dave=received")}
		alice.expect(ev(calls.EventCreated, c1))
		alice.expectAnyOrder(delivered...)
		for _, l := range []*listener{bob, carol, dave} {
			l.expect(ev(calls.EventReceived, c1))
			l.expectAnyOrder(delivered...)
		}

		api("bob").Action(c1, "reject", nil).Want(http.StatusOK)
		for _, l := range []*listener{alice, bob, carol, dave} {
			l.expect(changed(c1, "bob=rejected"))
		}

		api("alice").Action(c1, "cancel", map[string]any{"invitees": []string{"carol"}}).Want(http.StatusOK)
		carol.expect(ev(calls.EventCancelled, c1), changed(c1, "carol=cancelled"))
		alice.expect(changed(c1, "carol=cancelled"))
		dave.expect(changed(c1, "carol=cancelled"))

		s.Advance(30 * time.Second)
		dave.expect(ev(calls.EventTimeout, c1), changed(c1, "dave=timeout"))
		alice.expect(changed(c1, "dave=timeout"))
		if c := api("alice").GetCall(c1); c.State != calls.CallEnded {
			t.Fatalf("general call after the last timeout: %s", c.State)
		}

		// Advanced mode: accept, calling invite, reject, join, end.
		c2 := api("alice").Invite(map[string]any{"mode": "advanced"}, "bob", "carol").CallID
		delivered = []desc{changed(c2, "bob=received"), changed(c2, "carol=received")}
		alice.expect(ev(calls.EventCreated, c2))
		alice.expectAnyOrder(delivered...)
		for _, l := range []*listener{bob, carol} {
			l.expect(ev(calls.EventReceived, c2))
			l.expectAnyOrder(delivered...)
		}

		api("bob").Action(c2, "accept", nil).Want(http.StatusOK)
		for _, l := range []*listener{alice, bob, carol} {
			l.expect(changed(c2, "bob=accepted"))
		}

		api("alice").Action(c2, "invite", map[string]any{"invitees": []string{"dave"}}).Want(http.StatusOK)
		dave.expect(ev(calls.EventReceived, c2), changed(c2, "dave=inviting"), changed(c2, "dave=received"))
		for _, l := range []*listener{alice, bob, carol} {
			l.expect(changed(c2, "dave=inviting"), changed(c2, "dave=received"))
		}

		api("carol").Action(c2, "reject", nil).Want(http.StatusOK)
		for _, l := range []*listener{alice, bob, carol, dave} {
			l.expect(changed(c2, "carol=rejected"))
		}

		api("erin").Action(c2, "join", nil).Want(http.StatusOK)
		for _, l := range []*listener{alice, bob, dave, erin} {
			l.expect(changed(c2, "erin=accepted"))
		}

		api("bob").Action(c2, "end", nil).Want(http.StatusOK)
		for _, l := range []*listener{alice, bob, dave, erin} {
			e := l.expect(ev(calls.EventEnded, c2))[0].Fields()
			if e["operatedUserID"] != "bob" || e["caller"] != "alice" || e["mode"] != "advanced" || e["endTime"] != float64(s.Now()) {
				t.Fatalf("%s: callInvitationEnded %v", l.user, e)
			}
		}

		// The marker: the next event of every stream is this invitation.
		marker := api("zed").Invite(nil, users...).CallID
		for _, u := range users {
			ls[u].expect(ev(calls.EventReceived, marker))
		}
		_ = olivia
	})
}

// A browser app on another origin, when allowed by CALLSIG_CORS_ORIGINS,
// can open the stream with EventSource (token in the query, no preflight).
func TestEventStreamCrossOrigin(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example"
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.CORSOrigins = []string{origin} }))
	st := s.OpenStream(testkit.StreamOptions{
		User: "bob", NoAuthHeader: true,
		Query:  url.Values{"access_token": {s.Token("bob")}},
		Header: http.Header{"Origin": {origin}},
	})
	if got := st.Header.Get("Access-Control-Allow-Origin"); got != origin {
		t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, origin)
	}
	other := s.OpenStream(testkit.StreamOptions{User: "bob", Header: http.Header{"Origin": {"https://evil.example"}}})
	if got := other.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("a foreign origin was allowed: %q", got)
	}
}
