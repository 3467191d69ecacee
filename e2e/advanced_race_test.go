package e2e

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// race runs a and b at the same instant and returns their responses.
func race(a, b func() *testkit.Response) (ra, rb *testkit.Response) {
	var start, done sync.WaitGroup
	start.Add(1)
	done.Add(2)
	go func() { defer done.Done(); start.Wait(); ra = a() }()
	go func() { defer done.Done(); start.Wait(); rb = b() }()
	start.Done()
	done.Wait()
	return ra, rb
}

func lastOf(log []testkit.LoggedEvent, callID string) calls.EventType {
	ts := testkit.Types(log, callID)
	if len(ts) == 0 {
		return ""
	}
	return ts[len(ts)-1]
}

// Advanced-mode races: every pair ends as one of its two serial orders
// would, and the loser gets the contract's code.
func TestAdvancedRaces(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
		alice, bob, carol, dave := s.Client("alice"), s.Client("bob"), s.Client("carol"), s.Client("dave")
		const n = 8
		for i := 0; i < n; i++ {
			// join (outsider) vs end.
			id := alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
			join, end := race(func() *testkit.Response { return dave.Action(id, "join", nil) },
				func() *testkit.Response { return alice.Action(id, "end", nil) })
			end.Want(http.StatusOK)
			if join.Status == http.StatusOK {
				if got := lastOf(s.Log("dave"), id); got != calls.EventEnded {
					t.Fatalf("dave joined before the end but his last event is %q", got)
				}
			} else {
				join.WantProblem(http.StatusConflict, "call_ended")
				if len(testkit.Types(s.Log("dave"), id)) != 0 {
					t.Fatalf("dave's join lost but he has events")
				}
			}

			// the last member quits vs invites.
			id = alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
			bob.Action(id, "reject", nil).Want(http.StatusOK)
			quit, inv := race(func() *testkit.Response { return alice.Action(id, "quit", nil) },
				func() *testkit.Response {
					return alice.Action(id, "invite", map[string]any{"invitees": []string{"carol"}})
				})
			quit.Want(http.StatusOK)
			c := alice.GetCall(id)
			if inv.Status == http.StatusOK {
				if c.State != calls.CallStarted || testkit.UserState(c, "carol") != calls.StateInviting {
					t.Fatalf("invite won: call %s, carol %s", c.State, testkit.UserState(c, "carol"))
				}
				carol.Action(id, "reject", nil).Want(http.StatusOK)
				if c := alice.GetCall(id); c.State != calls.CallEnded {
					t.Fatalf("nobody left but the call is %s", c.State)
				}
			} else {
				inv.WantProblem(http.StatusConflict, "call_ended")
				if c.State != calls.CallEnded || testkit.UserState(c, "carol") != "" {
					t.Fatalf("quit won: %+v", c)
				}
			}

			// two joins of one outsider from two devices: both succeed (a join,
			// then a device switch).
			id = alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
			j1, j2 := race(func() *testkit.Response { return dave.OnDevice("phone").Action(id, "join", nil) },
				func() *testkit.Response { return dave.OnDevice("laptop").Action(id, "join", nil) })
			j1.Want(http.StatusOK)
			j2.Want(http.StatusOK)
			dave.OnDevice("phone").Action(id, "quit", nil).Want(http.StatusOK)

			// accept vs end.
			acc, end2 := race(func() *testkit.Response { return bob.Action(id, "accept", nil) },
				func() *testkit.Response { return alice.Action(id, "end", nil) })
			end2.Want(http.StatusOK)
			if acc.Status != http.StatusOK {
				acc.WantProblem(http.StatusConflict, "call_ended")
			} else if got := lastOf(s.Log("bob"), id); got != calls.EventEnded {
				t.Fatalf("bob accepted before the end but his last event is %q", got)
			}

			// the last two members quit at once: the call ends once.
			id = alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
			bob.Action(id, "accept", nil).Want(http.StatusOK)
			q1, q2 := race(func() *testkit.Response { return alice.Action(id, "quit", nil) },
				func() *testkit.Response { return bob.Action(id, "quit", nil) })
			q1.Want(http.StatusOK)
			q2.Want(http.StatusOK)
			if c := alice.GetCall(id); c.State != calls.CallEnded {
				t.Fatalf("both quit, call %s", c.State)
			}

			// cancel vs the invitee joining.
			id = alice.Invite(map[string]any{"mode": "advanced"}, "bob").CallID
			cj, cc := race(func() *testkit.Response { return bob.Action(id, "join", nil) },
				func() *testkit.Response { return alice.Action(id, "cancel", nil) })
			cj.Want(http.StatusOK) // joins from cancelled too
			st := testkit.UserState(alice.GetCall(id), "bob")
			if st != calls.StateAccepted {
				t.Fatalf("bob joined but is %s", st)
			}
			if cc.Status != http.StatusOK {
				cc.WantProblem(http.StatusConflict, "invalid_state")
			}
			alice.Action(id, "end", nil).Want(http.StatusOK)
		}
	})
}

// The caller-offline rule fired while an uninvited joiner was in, so the
// call went on. When the joiner quits, the caller (offline for longer than
// the grace, no invitee ever accepted) is the only one left in accepted:
// the contract's rule says the call ends ("if no one but the caller is
// left in accepted, it ends"). It must not stay started, with its absent
// caller busy, for ever.
func TestCallerOfflineJoinerQuitsEndsTheCall(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		alice := listen(t, s, "alice", "")
		bob := listen(t, s, "bob", "")
		id := s.Client("alice").Invite(map[string]any{"mode": "advanced", "timeout": 600}, "bob").CallID
		bob.expect(ev(calls.EventReceived, id), changed(id, "bob=received"))
		s.Client("dave").Action(id, "join", nil).Want(http.StatusOK)
		bob.expect(changed(id, "dave=accepted"))
		left := s.Now()
		alice.drop()
		at := offlineArmed(t, s, id)
		s.Advance(time.Duration(at-s.Now()) * time.Millisecond)
		bob.expect(ev(calls.EventCancelled, id), changed(id, "bob=cancelled"))

		// The rule stands while the caller stays away: armed again at its
		// firing, it ends the call a grace later, once no one but the
		// caller is left in accepted.
		s.Client("dave").Action(id, "quit", nil).Want(http.StatusOK)
		again := loadCall(t, s, id).CallerOfflineAt
		if again != at+(at-left) {
			t.Fatalf("caller-offline deadline %d after the joiner quit, want %d (a grace after the rule fired)", again, at+(at-left))
		}
		s.Advance(time.Duration(again-s.Now()) * time.Millisecond)
		var c testkit.Call
		wait.For(t, eventWait, "the call to end", func() bool {
			c = s.Client("dave").GetCall(id)
			return c.State == calls.CallEnded
		})
		if c.EndTime != again {
			t.Fatalf("the call ended at %d, want %d", c.EndTime, again)
		}
	})
}
