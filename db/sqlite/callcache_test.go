package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/fakeclock"
)

// fromSQL loads callID from the rows, bypassing the writer's cache, inside
// the write transaction tx.
func fromSQL(ctx context.Context, s *Store, tx *sqlx.Tx, callID string) (*calls.Call, error) {
	return loadCall(ctx, s.txStmt(tx, s.wst.selectCallByID), s.txStmt(tx, s.wst.selectUsers), callID)
}

// checkCached fails unless every cached call is exactly what its rows say,
// inside one write transaction.
func checkCached(t *testing.T, s *Store, ids []string, after string) {
	t.Helper()
	ctx := context.Background()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		for _, id := range ids {
			cached := s.cache.get(id)
			if cached == nil {
				continue
			}
			stored, err := fromSQL(ctx, s, tx, id)
			if err != nil {
				return fmt.Errorf("load %s: %w", id, err)
			}
			if !reflect.DeepEqual(cached, stored) {
				return fmt.Errorf("after %s, call %s: cached\n%+v\nstored\n%+v", after, id, dump(cached), dump(stored))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func dump(c *calls.Call) string {
	s := fmt.Sprintf("%+v", *c)
	for _, u := range c.Users {
		s += fmt.Sprintf("\n  %+v", *u)
	}
	return s
}

// Random use-cases over a few users and calls, through the real service:
// after each one, every call the writer's cache holds is what its rows say.
// Most random actions are refused (wrong state, not in the call): the
// refusals roll back, and the cache must forget what they read too.
func TestCallCacheMirrorsTheRows(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	clock := fakeclock.New(time.UnixMilli(1_000_000))
	svc := calls.NewService(calls.Options{Store: s, Clock: clock,
		Config: calls.Config{MaxCallUsers: 4, HeartbeatTimeout: 30 * time.Second}})
	users := []string{"ann", "ben", "cat", "dan", "eve"}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return users[rng.IntN(len(users))] }
	var ids []string
	served := 0
	const steps = 700
	for step := range steps {
		clock.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		actor := calls.Actor{UserID: pick(), Device: "d" + fmt.Sprint(rng.IntN(2))}
		var id string
		if len(ids) > 0 {
			id = ids[len(ids)-1-rng.IntN(min(len(ids), 6))]
		}
		var err error
		op := rng.IntN(12)
		switch {
		case op == 0 || op == 11 || id == "":
			mode := calls.ModeGeneral
			if rng.IntN(2) == 0 {
				mode = calls.ModeAdvanced
			}
			var r *calls.InviteResult
			r, err = svc.Invite(ctx, actor, calls.InviteInput{Invitees: []string{pick(), pick()}, Mode: mode,
				Timeout: 1 + rng.IntN(20), EnableNotReceivedCheck: rng.IntN(2) == 0})
			if err == nil {
				ids = append(ids, r.CallID)
			}
		case op == 1:
			err = svc.MarkDelivered(ctx, id, actor.UserID)
		case op == 2:
			_, err = svc.Accept(ctx, actor, id, "x")
		case op == 3:
			_, err = svc.Reject(ctx, actor, id, "")
		case op == 4:
			_, err = svc.Cancel(ctx, actor, id, calls.CancelInput{Invitees: []string{pick()}})
		case op == 5:
			_, err = svc.CallingInvite(ctx, actor, id, calls.CallingInviteInput{Invitees: []string{pick()}})
		case op == 6:
			_, err = svc.Join(ctx, actor, id, "")
		case op == 7:
			_, err = svc.Quit(ctx, actor, id, calls.LeaveInput{})
		case op == 8:
			_, err = svc.End(ctx, actor, id, calls.LeaveInput{})
		case op == 9:
			err = svc.Expire(ctx, calls.Deadline{CallID: id, UserID: pick(), Kind: calls.DeadlineTimeout, At: clock.Now().UnixMilli()})
		case op == 10:
			err = svc.UserOffline(ctx, actor.UserID)
		}
		if err == nil {
			served++
		}
		// The actions pick among the newest calls; the offline rule may
		// end older ones, which a later pick reads through the cache.
		checkCached(t, s, ids[max(0, len(ids)-12):], fmt.Sprintf("step %d (op %d, err %v)", step, op, err))
	}
	checkCached(t, s, ids, "the walk")
	t.Logf("%d calls, %d of %d actions served", len(ids), served, steps)
	if len(ids) < 40 || served < 200 {
		t.Fatalf("only %d calls and %d served actions: the walk did not exercise the cache", len(ids), served)
	}
}

// A request that saved a call and then failed leaves no trace in the
// cache; nor does a batch that could not commit, though the request that
// saved in it succeeded in its own savepoint.
func TestCallCacheForgetsWhatDidNotCommit(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	storetest.Save(t, s, storetest.NewCall("cache-call-000000001", "alice", 1000, "bob"))
	setData := func(data string, fail error) func(tx *sqlx.Tx) error {
		return func(tx *sqlx.Tx) error {
			ctx := context.Background()
			ct := s.callsTx(tx)
			c, err := ct.Call(ctx, "cache-call-000000001")
			if err != nil {
				return err
			}
			c.ExtendedData = data
			if err := ct.Save(ctx, &calls.Change{Call: c}); err != nil {
				return err
			}
			return fail
		}
	}
	dataNow := func() string {
		t.Helper()
		var data string
		err := s.Update(ctx, func(tx calls.Tx) error {
			c, err := tx.Call(ctx, "cache-call-000000001")
			if err == nil {
				data = c.ExtendedData
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	if err := s.write(ctx, setData("kept", nil)); err != nil {
		t.Fatal(err)
	}
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a committed save: %q", got)
	}
	boom := errors.New("boom")
	if err := s.write(ctx, setData("rolled back", boom)); !errors.Is(err, boom) {
		t.Fatalf("failing request: %v", err)
	}
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a rolled-back save: %q, want kept", got)
	}

	release := holdWriter(t, s)
	saved := goWrite(s, ctx, setData("lost with its batch", nil))
	waitQueued(t, s, 1)
	breaker := goWrite(s, ctx, func(tx *sqlx.Tx) error {
		_, err := tx.Exec("ROLLBACK")
		return err
	})
	waitQueued(t, s, 2)
	release()
	if err := <-saved; err == nil {
		t.Fatal("a save in a batch that could not commit was acknowledged")
	}
	if err := <-breaker; err == nil {
		t.Fatal("the breaking request succeeded")
	}
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a failed batch: %q, want kept", got)
	}
	checkCached(t, s, []string{"cache-call-000000001"}, "the failed batch")
}

// The cache holds at most two generations of cacheCalls calls, and the
// newest saves are the ones found.
func TestCallCacheIsBounded(t *testing.T) {
	cc := newCallCache()
	n := 3*cacheCalls + 7
	for i := range n {
		cc.put(&calls.Call{ID: fmt.Sprint(i)})
		cc.released()
		cc.committed()
	}
	if got := len(cc.cur) + len(cc.old); got > 2*cacheCalls {
		t.Fatalf("%d calls cached, want at most %d", got, 2*cacheCalls)
	}
	for i := n - cacheCalls; i < n; i++ {
		if cc.get(fmt.Sprint(i)) == nil {
			t.Fatalf("call %d, among the last %d saved, is not cached", i, cacheCalls)
		}
	}
	if cc.get("0") != nil {
		t.Fatal("the first call saved is still cached")
	}
}

// A change to any column sqlUpdateCall sets makes the update necessary.
func TestSameCallRowSeesEveryUpdatedColumn(t *testing.T) {
	row := &calls.Call{ID: "c", Seq: 7, Caller: "ann", Mode: calls.ModeGeneral, State: calls.CallStarted,
		Timeout: 30, ExtendedData: "x", CreateTime: 1}
	changes := map[string]func(c *calls.Call){
		"id":                 func(c *calls.Call) { c.ID = "d" },
		"mode":               func(c *calls.Call) { c.Mode = calls.ModeAdvanced },
		"state":              func(c *calls.Call) { c.State = calls.CallEnded },
		"timeout":            func(c *calls.Call) { c.Timeout = 31 },
		"extended_data":      func(c *calls.Call) { c.ExtendedData = "y" },
		"end_time":           func(c *calls.Call) { c.EndTime = 2 },
		"end_reason":         func(c *calls.Call) { c.EndReason = calls.EndCompleted },
		"not_received_check": func(c *calls.Call) { c.NotReceivedCheck = true },
		"caller_tracked":     func(c *calls.Call) { c.CallerTracked = true },
		"caller_offline_at":  func(c *calls.Call) { c.CallerOfflineAt = 3 },
	}
	if !sameCallRow(row, row.Saved()) {
		t.Fatal("a call is not the same row as its copy")
	}
	for column, change := range changes {
		c := row.Saved()
		change(c)
		if sameCallRow(row, c) {
			t.Errorf("a new %s leaves the row the same", column)
		}
	}
	if n := strings.Count(sqlUpdateCall, "?"); n != len(changes) {
		t.Errorf("sqlUpdateCall has %d placeholders, the test changes %d columns: a column is missing here", n, len(changes))
	}
}
