package e2e

import (
	"database/sql"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// The received transition survives losing its report. Bob's stream gets an
// invitation, and the server dies before the report commits: the file is
// left as that crash leaves it (bob still inviting, no event of the report
// in the log). Bob's client resumes with its Last-Event-ID on the restarted
// server, which had the invitation: bob becomes received.
func TestLostDeliveryReportIsMadeOnResume(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	bob := s.Stream("bob", "", "")
	alice := s.Client("alice")
	c1 := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
	got := bob.WaitFor(string(calls.EventReceived), nil, eventWait)
	wait.For(t, eventWait, "the delivery", func() bool { return testkit.UserState(alice.GetCall(c1), "bob") == calls.StateReceived })
	bob.Close()
	s.Stop()

	db, err := sql.Open("sqlite", s.Config.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`UPDATE call_users SET state = 'inviting', update_time = invite_time WHERE user_id = 'bob'`,
		`DELETE FROM events WHERE id > ?`,
	} {
		if _, err := db.Exec(q, got.ID()); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s.Restart()
	if st := testkit.UserState(alice.GetCall(c1), "bob"); st != calls.StateInviting {
		t.Fatalf("after the crash bob is %s, want inviting", st)
	}

	bob = s.Stream("bob", "", got.LastEventID)
	wait.For(t, eventWait, "bob received after resuming", func() bool {
		return testkit.UserState(alice.GetCall(c1), "bob") == calls.StateReceived
	})
	bob.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool { return e.Users()["bob"] == "received" }, eventWait)
}
