package e2e

import (
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// hookMissed is the data of call.missed.
type hookMissed struct {
	CallID  string `json:"callID"`
	UserID  string `json:"userID"`
	Caller  string `json:"caller"`
	Inviter string `json:"inviter"`
	Reason  string `json:"reason"`
	Time    int64  `json:"time"`
}

// missedCalls waits until everything queued for the endpoint has been
// delivered to rcv (signature, timestamp and body checked against the spec
// by the receiver) and returns the call.missed data of one call, sorted by
// user. A change and its webhooks commit together, so once the change that
// ended an invitation is acknowledged its deliveries are queued: waiting for
// all of them is a positive condition, and a call.missed that must not be
// sent cannot be still on its way.
func missedCalls(t *testing.T, s *testkit.Server, rcv *testkit.Receiver, wh testkit.Webhook, callID string) []hookMissed {
	t.Helper()
	s.WaitDeliveries(wh.ID, func(list []testkit.WebhookDelivery) bool {
		for _, d := range list {
			if d.Status != "delivered" {
				return false
			}
		}
		return true
	})
	var out []hookMissed
	for _, d := range rcv.Deliveries() {
		if d.Type != "call.missed" || !ofCall(callID)(d) {
			continue
		}
		var m hookMissed
		d.Decode(t, &m)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b hookMissed) int { return strings.Compare(a.UserID, b.UserID) })
	return out
}

func wantMissed(t *testing.T, got []hookMissed, want ...hookMissed) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("call.missed deliveries\n%+v\nwant\n%+v", got, want)
	}
}

// waitEnded waits until a call has ended (a deadline fired by the
// scheduler, which runs beside the request path).
func waitEnded(t *testing.T, s *testkit.Server, id string) {
	t.Helper()
	wait.For(t, eventWait, "call "+id+" to end", func() bool { return loadCall(t, s, id).State == calls.CallEnded })
}

// An invitee nobody heard from within the timeout missed the call; the one
// who accepted did not.
func TestCallMissedOnTimeout(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.missed", "call.ended")
		bob := listen(t, s, "bob", "")
		c := s.Client("alice").Invite(map[string]any{"timeout": 30}, "bob", "carol").CallID
		bob.expect(ev(calls.EventReceived, c), changed(c, "bob=received"))
		s.Client("bob").Action(c, "accept", nil).Want(http.StatusOK)

		s.Advance(30 * time.Second)
		waitEnded(t, s, c)
		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "carol", Caller: "alice", Inviter: "alice", Reason: "timeout", Time: s.Now()})
	})
}

// A cancelled invitee missed the call; one who rejected and one who
// accepted answered it.
func TestCallMissedOnCancel(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv) // every type
		c := s.Client("alice").Invite(nil, "bob", "carol", "dave").CallID
		s.Client("bob").Action(c, "reject", nil).Want(http.StatusOK)
		s.Advance(time.Second)
		s.Client("alice").Action(c, "cancel", map[string]any{"invitees": []string{"carol"}}).Want(http.StatusOK)
		cancelledAt := s.Now()
		s.Advance(time.Second)
		s.Client("dave").Action(c, "accept", nil).Want(http.StatusOK) // the last answer ends the call

		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "carol", Caller: "alice", Inviter: "alice", Reason: "cancelled", Time: cancelledAt})
		if n := len(rcv.WaitType("call.ended", 1, ofCall(c))); n != 1 {
			t.Fatalf("%d call.ended", n)
		}
	})
}

// A caller gone offline cancels every pending invitation: each of those
// invitees, whether their devices got the invitation or not, missed it.
func TestCallMissedWhenTheCallerGoesOffline(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		grace := s.Config.HeartbeatTimeout
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.missed")
		alice := listen(t, s, "alice", "")
		bob := listen(t, s, "bob", "")
		c := s.Client("alice").Invite(map[string]any{"timeout": 600}, "bob", "carol").CallID
		bob.expect(ev(calls.EventReceived, c), changed(c, "bob=received")) // carol has no stream: inviting

		alice.drop()
		offlineArmed(t, s, c)
		s.Advance(grace)
		waitEnded(t, s, c)
		at := s.Now()
		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "bob", Caller: "alice", Inviter: "alice", Reason: "caller_offline", Time: at},
			hookMissed{CallID: c, UserID: "carol", Caller: "alice", Inviter: "alice", Reason: "caller_offline", Time: at})
	})
}

// An advanced call ended while invitations are pending: those invitees
// missed it, with the member who invited them as inviter. The call.missed
// is once per invitee per call: carol, who already missed a first
// invitation, gets none for the second.
func TestCallMissedWhenTheCallEnds(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.missed")
		alice, bob := s.Client("alice"), s.Client("bob")
		c := alice.Invite(map[string]any{"mode": "advanced", "timeout": 30, "enableNotReceivedCheck": true}, "bob", "carol").CallID
		bob.Action(c, "accept", nil).Want(http.StatusOK)

		// carol, with no stream, goes notYetReceived, then times out.
		s.Advance(30 * time.Second)
		wait.For(t, eventWait, "carol to time out", func() bool { return loadCall(t, s, c).User("carol").State == calls.StateTimeout })
		timedOut := s.Now()
		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "carol", Caller: "alice", Inviter: "alice", Reason: "timeout", Time: timedOut})

		// bob invites carol again and dave; alice ends the call while both ring.
		s.Advance(time.Second)
		var res calls.CallingInviteResult
		bob.Action(c, "invite", map[string]any{"invitees": []string{"carol", "dave"}}).Want(http.StatusOK).JSON(&res)
		if len(res.ErrorUserList) != 0 {
			t.Fatalf("calling invite %+v", res)
		}
		s.Advance(time.Second)
		alice.Action(c, "end", nil).Want(http.StatusOK)
		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "carol", Caller: "alice", Inviter: "alice", Reason: "timeout", Time: timedOut},
			hookMissed{CallID: c, UserID: "dave", Caller: "alice", Inviter: "bob", Reason: "ended", Time: s.Now()})
	})
}

// "never for a user who accepted or rejected": bob rejects, carol accepts
// and quits; alice invites both again, with erin, who was never invited,
// and all three invitations time out. bob and carol answered this call
// once: only erin missed it.
func TestCallMissedNeverAfterAnAnswer(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, testkit.WithFakeClock())
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.missed")
		alice, bob, carol := s.Client("alice"), s.Client("bob"), s.Client("carol")
		c := alice.Invite(map[string]any{"mode": "advanced", "timeout": 30}, "bob", "carol").CallID
		bob.Action(c, "reject", nil).Want(http.StatusOK)
		carol.Action(c, "accept", nil).Want(http.StatusOK)
		carol.Action(c, "quit", nil).Want(http.StatusOK)

		s.Advance(time.Second)
		var res calls.CallingInviteResult
		alice.Action(c, "invite", map[string]any{"invitees": []string{"bob", "carol", "erin"}}).Want(http.StatusOK).JSON(&res)
		if len(res.ErrorUserList) != 0 {
			t.Fatalf("calling invite %+v", res)
		}
		s.Advance(30 * time.Second)
		wait.For(t, eventWait, "the invitations to time out", func() bool {
			cl := loadCall(t, s, c)
			return cl.User("bob").State == calls.StateTimeout && cl.User("carol").State == calls.StateTimeout &&
				cl.User("erin").State == calls.StateTimeout
		})
		wantMissed(t, missedCalls(t, s, rcv, wh, c),
			hookMissed{CallID: c, UserID: "erin", Caller: "alice", Inviter: "alice", Reason: "timeout", Time: s.Now()})
	})
}
