package e2e

import (
	"net/http"
	"sync"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
)

// An accept and a cancel for the same invitee sent at the same instant:
// exactly one wins, the other gets 409, and the stored state agrees with
// the winner. 200 times in general mode, where the accept ends the call;
// 50 in advanced mode, where it goes on and the cancel of "all mine still
// pending" finds none.
func TestAcceptCancelRace(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		t.Run("general", func(t *testing.T) { acceptCancelRace(t, backend, calls.ModeGeneral, 200) })
		t.Run("advanced", func(t *testing.T) { acceptCancelRace(t, backend, calls.ModeAdvanced, 50) })
	})
}

func acceptCancelRace(t *testing.T, backend testkit.Option, mode calls.Mode, n int) {
	s := testkit.Start(t, backend, backend)
	alice, bob := s.Client("alice"), s.Client("bob")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = alice.Invite(map[string]any{"mode": mode}, "bob").CallID
	}
	var wins [2]int
	for _, id := range ids {
		var accept, cancel *testkit.Response
		var start, done sync.WaitGroup
		start.Add(1)
		done.Add(2)
		go func() { defer done.Done(); start.Wait(); accept = bob.Action(id, "accept", nil) }()
		go func() { defer done.Done(); start.Wait(); cancel = alice.Action(id, "cancel", nil) }()
		start.Done()
		done.Wait()

		state := testkit.UserState(alice.GetCall(id), "bob")
		switch {
		case accept.Status == http.StatusOK && cancel.Status == http.StatusConflict:
			wins[0]++
			if state != calls.StateAccepted {
				t.Fatalf("accept won but bob is %s", state)
			}
		case cancel.Status == http.StatusOK && accept.Status == http.StatusConflict:
			wins[1]++
			if state != calls.StateCancelled {
				t.Fatalf("cancel won but bob is %s", state)
			}
		default:
			t.Fatalf("accept %d %s, cancel %d %s: want exactly one 200 and one 409", accept.Status, accept.Body, cancel.Status, cancel.Body)
		}
		loser := accept
		if accept.Status == http.StatusOK {
			loser = cancel
		}
		if p := loser.WantProblemIn(http.StatusConflict, "invalid_state", "call_ended"); p.Code == "" {
			t.Fatal("no problem code")
		}
	}
	t.Logf("accept won %d times, cancel %d times", wins[0], wins[1])
}
