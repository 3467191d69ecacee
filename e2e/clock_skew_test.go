package e2e

import (
	"net/http"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// A call's times never go back: its endTime is not before its createTime,
// nor an answer's updateTime before the invitation's, whichever node's
// clock dates them. In a cluster each node dates what it does by its own
// clock, and the nodes' clocks disagree (by tens of milliseconds under
// NTP, by seconds at times); one node's clock steps back when NTP corrects
// it. An app that orders a user's states by updateTime, or shows a call's
// duration, must not see them run backwards.
func TestCallTimesNeverGoBack(t *testing.T) {
	t.Parallel()
	story := func(t *testing.T, s *testkit.Server, answerOn int, stepBack func()) {
		alice, bob := s.Client("alice").OnNode(0), s.Client("bob").OnNode(answerOn)
		res := alice.Invite(map[string]any{"mode": "advanced", "timeout": 60}, "bob", "carol")
		created := res.Call.CreateTime
		invited := userInfo(t, res.Call, "bob").UpdateTime

		s.Advance(time.Second)
		stepBack()
		bob.Action(res.CallID, "accept", nil).Want(http.StatusOK)
		var quit calls.QuitResult
		bob.Action(res.CallID, "quit", nil).Want(http.StatusOK).JSON(&quit)
		s.Client("carol").OnNode(answerOn).Action(res.CallID, "reject", nil).Want(http.StatusOK)
		s.Client("alice").OnNode(answerOn).Action(res.CallID, "end", nil).Want(http.StatusOK)

		c := alice.GetCall(res.CallID)
		if c.EndTime < created {
			t.Errorf("endTime %d before createTime %d", c.EndTime, created)
		}
		if u := userInfo(t, c, "bob"); u.UpdateTime < invited {
			t.Errorf("bob's updateTime %d before his invitation's %d", u.UpdateTime, invited)
		}
		if quit.AcceptTime < created || quit.QuitTime < quit.AcceptTime {
			t.Errorf("quit answer %+v: acceptTime before createTime %d or quitTime before acceptTime", quit, created)
		}
		for _, user := range []string{"alice", "bob", "carol"} {
			var last int64
			for _, e := range s.Log(user) {
				if e.CallID == res.CallID && e.Time < last {
					t.Errorf("%s's %s at %d, after an event of the call at %d", user, e.Type, e.Time, last)
				}
				last = max(last, e.Time)
			}
		}
	}
	t.Run("a node behind the others", func(t *testing.T) {
		t.Parallel()
		s := testkit.Start(t, testkit.WithBackend(testkit.Cluster), testkit.WithClockOffsets(0, -5*time.Second))
		story(t, s, 1, func() {})
	})
	t.Run("the clock stepped back", func(t *testing.T) {
		t.Parallel()
		s := testkit.Start(t, testkit.WithFakeClock())
		story(t, s, 0, func() { s.Advance(-5 * time.Second) })
	})
}

func userInfo(t *testing.T, c testkit.Call, user string) calls.CallUserInfo {
	t.Helper()
	for _, u := range c.CallUserList {
		if u.UserID == user {
			return u
		}
	}
	t.Fatalf("%s not in call %s", user, c.CallID)
	return calls.CallUserInfo{}
}
