package e2e

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// streamWithToken opens bob's stream authenticated by ?access_token=tok, as
// an EventSource does, resuming after lastEventID when it is set.
func streamWithToken(s *testkit.Server, user, tok, lastEventID string) *testkit.Stream {
	s.T.Helper()
	q := url.Values{"access_token": {tok}}
	if lastEventID != "" {
		q.Set("lastEventID", lastEventID)
	}
	return s.OpenStream(testkit.StreamOptions{User: user, NoAuthHeader: true, Query: q})
}

// second is tokenWillExpire's {"second": N}.
func second(t *testing.T, e testkit.Event) int {
	t.Helper()
	n, ok := e.Fields()["second"].(float64)
	if !ok {
		t.Fatalf("tokenWillExpire without a number second: %v", e)
	}
	return int(n)
}

// A stream warns 30 s before its token's exp, with the seconds left, and
// the server ends it at exp.
func TestTokenWillExpireThenStreamEnds(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		// The token's exp is wall time, whole seconds, and the stream
		// counts down on the fake clock from what was left when it opened:
		// up to 100 s, less the real time the opening took (more than a
		// second on a loaded CI machine, which once warned during the
		// first step below). The steps leave it a few seconds.
		st := streamWithToken(s, "bob", s.TokenFor("bob", 100*time.Second), "")
		s.Advance(60 * time.Second) // about 40 s left: not yet
		c := s.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID
		st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool { return e.CallID() == c }, eventWait)
		st.NoEvent(quietWindow)

		s.Advance(10 * time.Second) // about 30 s left
		warn := st.Next(eventWait)
		if n := second(t, warn); warn.Type != "tokenWillExpire" || n < 25 || n > 30 {
			t.Fatalf("got %v, want tokenWillExpire with second 25 to 30", warn)
		}
		// Its id is the stream's position: where the next stream resumes.
		if warn.LastEventID == "" || warn.ID() < 0 {
			t.Fatalf("tokenWillExpire id %q, want the stream's position", warn.LastEventID)
		}
		if st.Ended() {
			t.Fatal("the stream ended before its token expired")
		}
		s.Advance(24 * time.Second) // about 6 s left
		st.NoEvent(quietWindow)
		if st.Ended() {
			t.Fatal("the stream ended before its token expired")
		}
		s.Advance(6 * time.Second)
		st.WaitEnded(eventWait)
	})
}

// A token with less than 30 s left is warned about at once, with what is
// left.
func TestTokenWillExpireAtOnceWhenLittleIsLeft(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		st := streamWithToken(s, "bob", s.TokenFor("bob", 10*time.Second), "")
		warn := st.Next(eventWait)
		// What is left: 10 s less the real time the opening took (see
		// TestTokenWillExpireThenStreamEnds).
		if n := second(t, warn); warn.Type != "tokenWillExpire" || n < 5 || n > 10 {
			t.Fatalf("got %v, want tokenWillExpire with second 5 to 10", warn)
		}
		s.Advance(10 * time.Second)
		st.WaitEnded(eventWait)
	})
}

// A client reopening with a fresh token and the warning's id, before the
// old stream ends, gets every event once: those committed while both were
// open, and those after the old one ended.
func TestTokenRenewalResumeLosesNothing(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := s.Client("alice")
		old := streamWithToken(s, "bob", s.TokenFor("bob", 40*time.Second), "")
		c1 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
		var seen []testkit.Event
		seen = append(seen, old.WaitFor(string(calls.EventReceived), nil, eventWait))
		seen = append(seen, old.WaitFor(string(calls.EventUserStateChanged), nil, eventWait))

		s.Advance(10 * time.Second)
		warn := old.WaitFor("tokenWillExpire", nil, eventWait)
		if warn.LastEventID != seen[1].LastEventID {
			t.Fatalf("tokenWillExpire at id %s, want the last event's %s", warn.LastEventID, seen[1].LastEventID)
		}
		alice.Action(c1, "cancel", nil).Want(200) // on the old stream only

		renewed := streamWithToken(s, "bob", s.TokenFor("bob", time.Hour), warn.LastEventID)
		c2 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID // on both
		s.Advance(30 * time.Second)
		old.WaitEnded(eventWait)
		c3 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID // on the new one only

		// The client keeps the old stream's events up to where the new one
		// took over and drops repeats by id, as the library does.
		last := warn.ID()
		for _, e := range append(old.Pending(), drain(t, renewed, c2, c3)...) {
			if e.ID() > last {
				seen = append(seen, e)
				last = e.ID()
			}
		}
		var got []string
		for _, e := range seen {
			got = append(got, e.LastEventID+" "+e.Type)
		}
		var want []string
		for _, e := range s.Log("bob") {
			want = append(want, strconv.FormatInt(e.ID, 10)+" "+string(e.Type))
		}
		if len(got) != len(want) {
			t.Fatalf("received\n%v\nthe log holds\n%v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("received\n%v\nthe log holds\n%v", got, want)
			}
		}
	})
}

// drain takes st's events up to bob's received callUserStateChanged of
// each of callIDs (the last events of the test). Each is written when a
// stream has delivered the invitation, apart from the invitation itself,
// so they may come in any order, after later invitations.
func drain(t *testing.T, st *testkit.Stream, callIDs ...string) []testkit.Event {
	t.Helper()
	left := map[string]bool{}
	for _, c := range callIDs {
		left[c] = true
	}
	var out []testkit.Event
	for len(left) > 0 {
		e := st.Next(eventWait)
		out = append(out, e)
		if e.Type == string(calls.EventUserStateChanged) && e.Users()["bob"] == string(calls.StateReceived) {
			delete(left, e.CallID())
		}
	}
	return out
}

// The wall clock steps forward past a stream's token's exp (NTP correcting
// a clock that was behind, a VM resumed): the token has expired, and the
// stream ends within a heartbeat, not once the time its token had left
// when it opened has elapsed.
func TestStreamEndsWhenTheClockStepsPastItsToken(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithClockOffsets(), testkit.WithStreamHeartbeat(100*time.Millisecond))
	st := streamWithToken(s, "bob", s.TokenFor("bob", time.Hour), "")
	c := s.Client("alice").Invite(nil, "bob").CallID
	st.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == c }, eventWait)

	s.StepClock(0, 2*time.Hour)
	st.WaitEnded(eventWait)
}
