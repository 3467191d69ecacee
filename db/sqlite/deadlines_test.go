package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// The scheduler queues its next claim of deadlines as soon as the last
// claim has fired its batch in the writer's transaction, while that batch
// is fsynced (calls.ClaimBatching.Pipelined), and no sooner than the claim
// before it is answered: with the first claim's fsync held, the writer
// fires a second claim's 64 deadlines, and not a third's. Every deadline
// then fires once.
func TestClaimsPipelineBehindTheFsync(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const batch, n = 64, 3 * 64
	if got := s.DeadlineBatching(); got.Batch != batch || !got.Pipelined {
		t.Fatalf("DeadlineBatching = %+v, want pipelined claims of %d", got, batch)
	}
	err := s.Update(ctx, func(tx calls.Tx) error {
		for i := range n {
			if err := tx.Save(ctx, storetest.NewCall(fmt.Sprintf("c%03d", i), fmt.Sprintf("caller%d", i), 1_000, fmt.Sprintf("callee%d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Fsyncs pass until hold is set; the first one after it waits for the
	// gate, the later ones for it too, queued behind it in the syncer.
	var hold atomic.Bool
	entered, gate := make(chan struct{}, 1), make(chan struct{})
	open := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	real := s.syncWAL
	s.syncWAL = func() error {
		if hold.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
		return real()
	}
	clock := fakeclock.New(time.UnixMilli(1_000))
	fired := &timeouts{}
	svc := calls.NewService(calls.Options{Store: s, Clock: clock, Notifier: fired})
	ran := make(chan error, 1)
	go func() { ran <- svc.Run(ctx) }()
	// The scheduler's first round (nothing due) is over once it has armed
	// its timer for the deadlines; then the next fsync is a claim's.
	wait.For(t, 10*time.Second, "the scheduler armed for the deadlines", func() bool { return clock.Armed(time.UnixMilli(31_000)) })
	hold.Store(true)
	clock.Advance(40 * time.Second) // every invitation's 30 s timeout is due
	select {                        // the first claim committed; its fsync is held
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no claim reached an fsync within 10 s of the deadlines falling due")
	}
	// Counted in the writer's transaction, which holds what is committed
	// or still open but not yet durable.
	timedOut := func() int {
		got := make(chan int, 1)
		goWrite(s, ctx, func(tx *sqlx.Tx) error {
			var k int
			err := tx.Get(&k, `SELECT COUNT(*) FROM call_users WHERE state = 'timeout'`)
			got <- k
			return err
		})
		return <-got
	}
	wait.For(t, 10*time.Second, "a second claim fired while the first one's fsync is held", func() bool { return timedOut() >= 2*batch })
	if k := timedOut(); k != 2*batch {
		t.Errorf("%d deadlines fired while the first claim's fsync is held, want %d (two claims in flight)", k, 2*batch)
	}
	if k := fired.n.Load(); k != 0 {
		t.Errorf("%d timeouts reported committed before any fsync", k)
	}
	open()
	wait.For(t, 10*time.Second, "every deadline to fire", func() bool { return fired.n.Load() >= n })
	cancel()
	if err := <-ran; err != nil && err != context.Canceled {
		t.Fatal(err)
	}
	if k := fired.n.Load(); k != n {
		t.Errorf("%d timeouts for %d deadlines", k, n)
	}
}

// A claim's user rows and events are written together at its end
// (deferredRows), and the claim still reads its own writes: each read
// that could see them (a call's rows, several calls', the caller-offline
// calls, the busy check), an invitation's row and the freeing of an ended
// call's users come after a change saved and not yet written; each event
// gets its id in the order saved. With the writer's call cache, a call
// read again comes from the cache and alice's end frees bob's row still
// held back; without it, tx.Call and tx.Calls read the rows.
func TestClaimWritesItsRowsTogether(t *testing.T) {
	for _, cache := range []bool{true, false} {
		t.Run(fmt.Sprintf("cache=%v", cache), func(t *testing.T) { testClaimWritesItsRowsTogether(t, cache) })
	}
}

func testClaimWritesItsRowsTogether(t *testing.T, cache bool) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "callsig.db"), Options{NoCallCache: !cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pairs := [][2]string{{"alice", "bob"}, {"carol", "dave"}, {"erin", "frank"}, {"gina", "hank"}, {"ivan", "judy"}, {"kate", "liam"}}
	for _, c := range pairs {
		ch := storetest.NewCall("call-"+c[0], c[0], 1_000, c[1])
		ch.Call.Mode = calls.ModeAdvanced // alice ends her call
		ch.Call.CallerTracked = true      // for TrackedCallerOfflineCalls
		storetest.Save(t, s, ch)
	}
	const now = 40_000 // every invitation's 30 s is due
	var saved []*calls.Change
	n, err := s.UpdateDue(ctx, now, 64, func(tx calls.Tx, due []calls.Deadline) error {
		saved = saved[:0]
		save := func(ch *calls.Change, err error) error {
			if err != nil {
				return err
			}
			saved = append(saved, ch)
			return tx.Save(ctx, ch)
		}
		deadline := func(callID string) calls.Deadline {
			for _, d := range due {
				if d.CallID == callID {
					return d
				}
			}
			return calls.Deadline{}
		}
		answer := func(callID, user string) error {
			c, err := tx.Call(ctx, callID)
			if err != nil {
				return err
			}
			return save(calls.Answer(c, calls.Actor{UserID: user}, true, "", now))
		}
		// bob accepts; alice, reading her call again, ends it.
		if err := answer("call-alice", "bob"); err != nil {
			return err
		}
		c, err := tx.Call(ctx, "call-alice")
		if err != nil {
			return err
		}
		if u := c.User("bob"); u.State != calls.StateAccepted {
			return fmt.Errorf("bob read back in the claim as %s, want %s", u.State, calls.StateAccepted)
		}
		if err := save(calls.End(c, calls.Actor{UserID: "alice"}, calls.LeaveInput{}, now)); err != nil {
			return err
		}
		// frank accepts: erin's call is no longer one presence can end.
		if err := answer("call-erin", "frank"); err != nil {
			return err
		}
		tracked, err := tx.TrackedCallerOfflineCalls(ctx, 0, 100)
		if err != nil {
			return err
		}
		for _, c := range tracked {
			if c.ID == "call-erin" {
				return errors.New("call-erin still a tracked call with no invitee accepted: frank's accept unseen")
			}
		}
		// liam's invitation is delivered: kate's calls come with it.
		if c, err = tx.Call(ctx, "call-kate"); err != nil {
			return err
		}
		if err := save(calls.Delivered(c, "liam", 0, now), nil); err != nil {
			return err
		}
		offline, err := tx.CallerOfflineCalls(ctx, "kate", 0, 100)
		if err != nil {
			return err
		}
		if len(offline) != 1 || offline[0].User("liam").State != calls.StateReceived {
			return fmt.Errorf("kate's calls in the claim: %+v, want call-kate with liam received", offline)
		}
		// A new call's invitation, recorded on its invitee's row.
		if err := save(storetest.NewCall("call-xena", "xena", now, "yan"), nil); err != nil {
			return err
		}
		// dave times out; reading several calls gives the rows as saved.
		loader := tx.(calls.CallsLoader)
		found, err := loader.Calls(ctx, []string{"call-carol"})
		if err != nil {
			return err
		}
		if err := save(calls.Expire(found["call-carol"], deadline("call-carol"), now), nil); err != nil {
			return err
		}
		if found, err = loader.Calls(ctx, []string{"call-carol"}); err != nil {
			return err
		}
		if u := found["call-carol"].User("dave"); u.State != calls.StateTimeout {
			return fmt.Errorf("dave read back in the claim as %s, want %s", u.State, calls.StateTimeout)
		}
		// hank accepts, and is busy at once.
		if err := answer("call-gina", "hank"); err != nil {
			return err
		}
		busy, err := tx.BusyUsers(ctx, []string{"hank"}, "")
		if err != nil {
			return err
		}
		if len(busy) != 1 {
			return fmt.Errorf("busy in the claim: %v, want hank", busy)
		}
		// judy times out, with no read after it.
		if c, err = tx.Call(ctx, "call-ivan"); err != nil {
			return err
		}
		return save(calls.Expire(c, deadline("call-ivan"), now), nil)
	})
	if err != nil || n != len(pairs) {
		t.Fatalf("UpdateDue = %d, %v; want %d deadlines", n, err, len(pairs))
	}
	if n := count(t, s, "call_users WHERE busy = 1 AND call_seq = (SELECT seq FROM calls WHERE id = 'call-alice')"); n != 0 {
		t.Errorf("%d users of alice's call busy after the claim, want none: the ended call frees bob", n)
	}
	var last int64
	for _, ch := range saved {
		for _, ev := range ch.Events {
			if ev.ID <= last {
				t.Fatalf("%s event of %s for %s has id %d after %d: ids not in the order saved", ev.Type, ev.CallID, ev.UserID, ev.ID, last)
			}
			last = ev.ID
			logged, err := s.EventsAfter(ctx, ev.UserID, ev.ID-1, 1)
			if err != nil || len(logged) != 1 || logged[0].ID != ev.ID || logged[0].Type != ev.Type || logged[0].CallID != ev.CallID {
				t.Fatalf("log at %d for %s = %+v (%v), want the %s event of %s", ev.ID, ev.UserID, logged, err, ev.Type, ev.CallID)
			}
		}
	}
	if last == 0 {
		t.Fatal("the claim saved no event")
	}
	for _, w := range []struct {
		call, user string
		state      calls.UserState
	}{
		{"call-alice", "bob", calls.StateAccepted}, {"call-carol", "dave", calls.StateTimeout},
		{"call-erin", "frank", calls.StateAccepted}, {"call-gina", "hank", calls.StateAccepted},
		{"call-ivan", "judy", calls.StateTimeout}, {"call-xena", "yan", calls.StateInviting},
		{"call-kate", "liam", calls.StateReceived},
	} {
		c, err := s.Call(ctx, w.call)
		if err != nil {
			t.Fatal(err)
		}
		if u := c.User(w.user); u == nil || u.State != w.state {
			t.Errorf("%s in %s after the claim: %+v, want %s", w.user, w.call, u, w.state)
		}
	}
	if pending, err := s.PendingInvitations(ctx, "yan", 10); err != nil || len(pending) != 1 || pending[0].CallID != "call-xena" {
		t.Errorf("yan's pending invitations after the claim: %+v (%v), want call-xena's", pending, err)
	}
}

// A claim whose held-back rows fail to be written fails, whatever its fn
// does after: a Save after the failure returns it, and so does the claim,
// so the calls' rows never commit without their users and events.
func TestClaimFailedWriteStaysItsOutcome(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, c := range [][2]string{{"alice", "bob"}, {"carol", "dave"}} {
		storetest.Save(t, s, storetest.NewCall("call-"+c[0], c[0], 1_000, c[1]))
	}
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`CREATE TRIGGER no_events_for_bob BEFORE INSERT ON events WHEN NEW.user_id = 'bob'
			BEGIN SELECT RAISE(ABORT, 'no events for bob'); END`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var saveAfter error
	_, err = s.UpdateDue(ctx, 40_000, 64, func(tx calls.Tx, due []calls.Deadline) error {
		slices.SortFunc(due, func(a, b calls.Deadline) int { return strings.Compare(a.CallID, b.CallID) }) // alice's first
		read := map[string]*calls.Call{}
		for _, d := range due {
			c, err := tx.Call(ctx, d.CallID)
			if err != nil {
				return err
			}
			read[d.CallID] = c
		}
		saveAfter = nil
		for i, d := range due {
			ch := calls.Expire(read[d.CallID], d, 40_000)
			if i > 0 {
				saveAfter = tx.Save(ctx, ch)
				continue
			}
			if err := tx.Save(ctx, ch); err != nil {
				return err
			}
			// The read writes bob's rows first, and fails; a careless fn
			// goes on.
			_, _ = tx.BusyUsers(ctx, []string{"erin"}, "")
		}
		return nil
	})
	if err == nil {
		t.Fatal("UpdateDue succeeded although bob's events could not be written")
	}
	if saveAfter == nil {
		t.Error("a Save after the failed write succeeded")
	}
	for _, w := range [][2]string{{"call-alice", "bob"}, {"call-carol", "dave"}} {
		c, err := s.Call(ctx, w[0])
		if err != nil {
			t.Fatal(err)
		}
		if u := c.User(w[1]); u.State != calls.StateInviting || c.State != calls.CallStarted {
			t.Errorf("%s after the failed claim: call %s, %s %s; want nothing written", w[0], c.State, w[1], u.State)
		}
	}
}
