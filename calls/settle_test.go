package calls_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/sqlite"
	"callsig/internal/fakeclock"
)

// recorded is a Notifier keeping the committed events.
type recorded struct {
	mu     sync.Mutex
	events []calls.Event
}

func (r *recorded) Committed(events []calls.Event, _ int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, events...)
}

func (r *recorded) count(typ calls.EventType, user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Type == typ && e.UserID == user {
			n++
		}
	}
	return n
}

// onlineSet is a Presence of the users a test put online.
type onlineSet struct{ users sync.Map }

func (p *onlineSet) Online(userID string) bool { _, ok := p.users.Load(userID); return ok }

// settleRig is a service on a real SQLite store whose scheduler never
// runs: whatever fires a deadline in these tests is the action itself.
func settleRig(t *testing.T) (*calls.Service, *fakeclock.Clock, *recorded, *onlineSet) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "callsig.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := fakeclock.New(time.UnixMilli(1_767_225_600_000))
	note, presence := &recorded{}, &onlineSet{}
	svc := calls.NewService(calls.Options{Store: st, Clock: clock, Notifier: note, Presence: presence})
	return svc, clock, note, presence
}

func stateOf(t *testing.T, svc *calls.Service, callID, user string) calls.UserState {
	t.Helper()
	info, err := svc.Get(context.Background(), calls.Actor{UserID: user, Device: "d"}, callID)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range info.CallUserList {
		if u.UserID == user {
			return u.State
		}
	}
	t.Fatalf("%s not in call %s", user, callID)
	return ""
}

// An action that comes after a deadline fell due and before the scheduler
// fired it (it lags after a restart, or under many deadlines at once)
// finds the deadline fired: an invitation past its timeout is no longer
// accepted, rejected or cancelled, and its timeout is committed and told
// (callInvitationTimeout) although the action is refused.
func TestActionsAfterATimeoutTheSchedulerHasNotFired(t *testing.T) {
	ctx := context.Background()
	alice, bob := calls.Actor{UserID: "alice", Device: "d"}, calls.Actor{UserID: "bob", Device: "d"}
	for _, tc := range []struct {
		name string
		act  func(svc *calls.Service, callID string) error
	}{
		{"accept", func(svc *calls.Service, id string) error { _, err := svc.Accept(ctx, bob, id, ""); return err }},
		{"reject", func(svc *calls.Service, id string) error { _, err := svc.Reject(ctx, bob, id, ""); return err }},
		{"cancel", func(svc *calls.Service, id string) error {
			_, err := svc.Cancel(ctx, alice, id, calls.CancelInput{Invitees: []string{"bob"}})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, clock, note, _ := settleRig(t)
			res, err := svc.Invite(ctx, alice, calls.InviteInput{Invitees: []string{"bob"}, Mode: calls.ModeAdvanced, Timeout: 1})
			if err != nil {
				t.Fatal(err)
			}
			clock.Advance(5 * time.Second)
			err = tc.act(svc, res.CallID)
			var domain *calls.Error
			if !errors.As(err, &domain) || domain.Code != calls.CodeInvalidState {
				t.Fatalf("%s 4 s after the timeout: %v, want invalid_state", tc.name, err)
			}
			if s := stateOf(t, svc, res.CallID, "bob"); s != calls.StateTimeout {
				t.Errorf("bob after the refused %s: %s, want timeout", tc.name, s)
			}
			if n := note.count(calls.EventTimeout, "bob"); n != 1 {
				t.Errorf("%d callInvitationTimeout to bob, want 1", n)
			}
		})
	}

	// A delivery report after the timeout does not make it received.
	svc, clock, note, _ := settleRig(t)
	res, err := svc.Invite(ctx, alice, calls.InviteInput{Invitees: []string{"bob"}, Timeout: 1})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	if err := svc.MarkDelivered(ctx, res.CallID, "bob", 0); err != nil {
		t.Fatal(err)
	}
	if s := stateOf(t, svc, res.CallID, "bob"); s != calls.StateTimeout {
		t.Errorf("bob after a delivery report past his timeout: %s, want timeout", s)
	}
	if n := note.count(calls.EventTimeout, "bob"); n != 1 {
		t.Errorf("a late delivery report: %d callInvitationTimeout to bob, want 1", n)
	}
}

// A caller whose offline grace ran out before the scheduler ended the
// call: the invitee's accept finds the call cancelled, not rescued.
func TestAcceptAfterTheCallersGraceTheSchedulerHasNotFired(t *testing.T) {
	ctx := context.Background()
	svc, clock, note, presence := settleRig(t)
	presence.users.Store("alice", true)
	alice, bob := calls.Actor{UserID: "alice", Device: "d"}, calls.Actor{UserID: "bob", Device: "d"}
	res, err := svc.Invite(ctx, alice, calls.InviteInput{Invitees: []string{"bob"}, Timeout: 600})
	if err != nil {
		t.Fatal(err)
	}
	presence.users.Delete("alice")
	if err := svc.UserOffline(ctx, "alice", clock.Now()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(31 * time.Second) // past the 30-s grace
	_, err = svc.Accept(ctx, bob, res.CallID, "")
	var domain *calls.Error
	if !errors.As(err, &domain) || domain.Code != calls.CodeCallEnded {
		t.Fatalf("accept after the caller's grace: %v, want call_ended", err)
	}
	if n := note.count(calls.EventCancelled, "bob"); n != 1 {
		t.Errorf("%d callInvitationCancelled to bob, want 1", n)
	}
}
