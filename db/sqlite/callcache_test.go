package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	sqlitedriver "modernc.org/sqlite"

	"callsig/calls"
	"callsig/db"
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

// walk runs random use-cases over a few users and the newest calls through
// the real service. Most are refused (wrong state, not in the call): the
// refusals roll back, and the cache must forget what they read too.
type walk struct {
	svc   *calls.Service
	clock *fakeclock.Clock
	users []string

	mu     sync.Mutex
	ids    []string
	served int
}

// step runs one random action; seeded by rng, the actions of one goroutine
// repeat from run to run (several goroutines interleave as they may).
func (w *walk) step(ctx context.Context, rng *rand.Rand) (op int, err error) {
	pick := func() string { return w.users[rng.IntN(len(w.users))] }
	actor := calls.Actor{UserID: pick(), Device: "d" + fmt.Sprint(rng.IntN(2))}
	w.mu.Lock()
	var id string
	if len(w.ids) > 0 {
		id = w.ids[len(w.ids)-1-rng.IntN(min(len(w.ids), 6))]
	}
	w.mu.Unlock()
	op = rng.IntN(12)
	switch {
	case op == 0 || op == 11 || id == "":
		mode := calls.ModeGeneral
		if rng.IntN(2) == 0 {
			mode = calls.ModeAdvanced
		}
		var r *calls.InviteResult
		r, err = w.svc.Invite(ctx, actor, calls.InviteInput{Invitees: []string{pick(), pick()}, Mode: mode,
			Timeout: 1 + rng.IntN(20), EnableNotReceivedCheck: rng.IntN(2) == 0})
		if err == nil {
			w.mu.Lock()
			w.ids = append(w.ids, r.CallID)
			w.mu.Unlock()
		}
	case op == 1:
		err = w.svc.MarkDelivered(ctx, id, actor.UserID, 0)
	case op == 2:
		_, err = w.svc.Accept(ctx, actor, id, "x")
	case op == 3:
		_, err = w.svc.Reject(ctx, actor, id, "")
	case op == 4:
		_, err = w.svc.Cancel(ctx, actor, id, calls.CancelInput{Invitees: []string{pick()}})
	case op == 5:
		_, err = w.svc.CallingInvite(ctx, actor, id, calls.CallingInviteInput{Invitees: []string{pick()}})
	case op == 6:
		_, err = w.svc.Join(ctx, actor, id, "")
	case op == 7:
		_, err = w.svc.Quit(ctx, actor, id, calls.LeaveInput{})
	case op == 8:
		_, err = w.svc.End(ctx, actor, id, calls.LeaveInput{})
	case op == 9:
		err = w.svc.Expire(ctx, calls.Deadline{CallID: id, UserID: pick(), Kind: calls.DeadlineTimeout, At: w.clock.Now().UnixMilli()})
	case op == 10:
		err = w.svc.UserOffline(ctx, actor.UserID, time.Time{})
	}
	if err == nil {
		w.mu.Lock()
		w.served++
		w.mu.Unlock()
	}
	return op, err
}

// onRowChange calls fn, on the writer goroutine, before every row change
// the writer's connection makes until the test ends (a pre-update hook,
// modernc's HookRegisterer). The writer must be idle when it is called.
func onRowChange(t *testing.T, s *Store, fn func(sqlitedriver.SQLitePreUpdateData)) {
	t.Helper()
	register := func(fn sqlitedriver.PreUpdateHookFn) {
		conn, err := s.wdb.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		err = conn.Raw(func(dc any) error {
			dc.(sqlitedriver.HookRegisterer).RegisterPreUpdateHook(fn)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	register(fn)
	t.Cleanup(func() { register(nil) })
}

// guardWrites fails t if a row changes where the writer does not expect
// it: rowOutsideSave and unmarkedBareWrite say where.
func guardWrites(t *testing.T, s *Store) {
	t.Helper()
	var mu sync.Mutex
	var bad []string
	onRowChange(t, s, func(d sqlitedriver.SQLitePreUpdateData) {
		for _, check := range []func(*Store, sqlitedriver.SQLitePreUpdateData) string{rowOutsideSave, unmarkedBareWrite} {
			if msg := check(s, d); msg != "" {
				mu.Lock()
				bad = append(bad, msg)
				mu.Unlock()
			}
		}
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("%d row changes the writer did not expect, e.g. %s", len(bad), bad[0])
		}
	})
}

// rowOutsideSave describes a change to a row of calls or call_users made
// outside callsTx.save, "" for any other change: the writer's call cache
// mirrors those rows only because every write to them goes through it (see
// callcache.go). It looks for save on the Go stack of the change.
func rowOutsideSave(_ *Store, d sqlitedriver.SQLitePreUpdateData) string {
	if d.TableName != "calls" && d.TableName != "call_users" || onStack("db/sqlite.(*callsTx).save") {
		return ""
	}
	return fmt.Sprintf("op %d on %s row %d outside Save", d.Op, d.TableName, d.NewRowID)
}

// A delivery mark changes its invitee's row and leaves the call row
// alone: Save skips the UPDATE that would write it as it is (sameCallRow).
func TestDeliveryMarkLeavesTheCallRow(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	svc := calls.NewService(calls.Options{Store: s})
	r, err := svc.Invite(ctx, calls.Actor{UserID: "alice"}, calls.InviteInput{Invitees: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	var callRows, userRows atomic.Int64
	onRowChange(t, s, func(d sqlitedriver.SQLitePreUpdateData) {
		switch d.TableName {
		case "calls":
			callRows.Add(1)
		case "call_users":
			userRows.Add(1)
		}
	})
	if err := svc.MarkDelivered(ctx, r.CallID, "bob", 0); err != nil {
		t.Fatal(err)
	}
	if callRows.Load() != 0 || userRows.Load() == 0 {
		t.Fatalf("the mark changed %d call rows and %d user rows, want 0 and some", callRows.Load(), userRows.Load())
	}
}

// Random use-cases through the real service: one at a time, every call the
// writer's cache holds is what its rows say after each; then from several
// goroutines at once, so that requests share batches and some roll back
// between others, checked at the end.
func TestCallCacheMirrorsTheRows(t *testing.T) {
	s := openTest(t)
	guardWrites(t, s)
	ctx := context.Background()
	clock := fakeclock.New(time.UnixMilli(1_000_000))
	w := &walk{clock: clock, users: []string{"ann", "ben", "cat", "dan", "eve"},
		svc: calls.NewService(calls.Options{Store: s, Clock: clock,
			Config: calls.Config{MaxCallUsers: 4, HeartbeatTimeout: 30 * time.Second}})}
	rng := rand.New(rand.NewPCG(1, 2))
	const steps = 600
	for step := range steps {
		clock.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		op, err := w.step(ctx, rng)
		// The actions pick among the newest calls; the offline rule may
		// end older ones, which a later pick reads through the cache.
		checkCached(t, s, w.ids[max(0, len(w.ids)-12):], fmt.Sprintf("step %d (op %d, err %v)", step, op, err))
	}
	checkCached(t, s, w.ids, "the walk")
	t.Logf("one at a time: %d calls, %d of %d actions served", len(w.ids), w.served, steps)
	if len(w.ids) < 35 || w.served < 170 {
		t.Fatalf("only %d calls and %d served actions: the walk did not exercise the cache", len(w.ids), w.served)
	}

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(3, uint64(g)))
			for range 60 {
				w.step(ctx, rng) //nolint:errcheck // refusals are part of the walk
			}
		})
	}
	wg.Wait()
	checkCached(t, s, w.ids, "the concurrent walk")
	if st := s.WriterStats(); st.CallCacheHits < int64(w.served) {
		t.Errorf("call cache hits %d after %d actions served on calls just written", st.CallCacheHits, w.served)
	}
	t.Logf("after the concurrent walk: %d calls, %d actions served; %d commits", len(w.ids), w.served, s.commits.Load())
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

	if errs := inOneBatch(t, s, setData("lost with its batch", nil), breakTx); errs[0] == nil || errs[1] == nil {
		t.Fatalf("a batch that could not commit answered %v", errs)
	}
	misses := s.WriterStats().CallCacheMisses
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a failed batch: %q, want kept", got)
	}
	if n := s.WriterStats().CallCacheMisses - misses; n != 1 {
		t.Errorf("%d cache misses reading the call after a failed batch, want 1 (the cache was emptied)", n)
	}

	// A panic after the save rolls its savepoint back.
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_ = setData("panicked", nil)(tx)
		panic("kaboom")
	})
	if pe := (*db.PanicError)(nil); !errors.As(err, &pe) {
		t.Fatalf("panicking request: %v", err)
	}
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a panic: %q, want kept", got)
	}

	// A COMMIT that fails (a foreign key deferred to it, broken by another
	// request of the batch) takes every save of its batch with it.
	errs := inOneBatch(t, s, setData("lost with its commit", nil), func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`PRAGMA defer_foreign_keys = ON;
			INSERT INTO call_users (call_seq, user_id, ord, state) VALUES (999999, 'nobody', 0, 'inviting')`)
		return err
	})
	if errs[0] == nil {
		t.Fatal("a save in a batch whose COMMIT failed was acknowledged")
	}
	if got := dataNow(); got != "kept" {
		t.Fatalf("after a failed COMMIT: %q, want kept", got)
	}
	checkCached(t, s, []string{"cache-call-000000001"}, "the failed batches")
}

// The cache holds at most two generations of cacheGeneration bytes, and
// the newest saves are the ones found; one batch adds at most cachePending.
func TestCallCacheIsBounded(t *testing.T) {
	cc := newCallCache()
	big := strings.Repeat("x", 2048)
	call := func(i int) *calls.Call {
		return &calls.Call{ID: fmt.Sprint(i), ExtendedData: big,
			Users: []*calls.CallUser{{UserID: "a", ExtendedData: big}, {UserID: "b", ExtendedData: big}}}
	}
	size := callSize(call(0))
	n := 3*cacheGeneration/size + 7
	for i := range n {
		cc.put(call(i))
		cc.released()
		cc.committed()
	}
	held := 0
	for _, m := range []map[string]*calls.Call{cc.cur, cc.old} {
		for _, c := range m {
			held += callSize(c)
		}
	}
	if held > 2*cacheGeneration+size {
		t.Fatalf("%d bytes cached, want at most %d", held, 2*cacheGeneration)
	}
	for i := n - cacheGeneration/size; i < n; i++ {
		if cc.get(fmt.Sprint(i)) == nil {
			t.Fatalf("call %d, among the last %d saved, is not cached", i, cacheGeneration/size)
		}
	}
	if cc.get("0") != nil {
		t.Fatal("the first call saved is still cached")
	}

	// One batch: past cachePending the cache forgets instead of adding,
	// including an older copy of the call it cannot hold any more.
	cc.reset()
	cc.put(call(-1))
	cc.released()
	cc.committed()
	for i := range 2 * cachePending / size {
		cc.put(call(i))
		cc.released()
	}
	cc.put(call(-1))
	if len(cc.batch)*size > cachePending {
		t.Fatalf("%d calls pending in one batch, want at most %d bytes' worth", len(cc.batch), cachePending)
	}
	if cc.get("-1") != nil {
		t.Fatal("a call the batch could not hold kept its older copy")
	}
}

// Save caches only a call whose every row it knows: a change that alters a
// user it does not mark dirty (Save does not write that row) leaves the
// call to be read back from the rows.
func TestCallCacheKeepsOnlyWhatSaveWrote(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	storetest.Save(t, s, storetest.NewCall("cache-call-000000002", "alice", 1000, "bob", "carol"))
	err := s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, "cache-call-000000002")
		if err != nil {
			return err
		}
		c.User("carol").State = calls.StateRejected // not marked dirty: not written
		return tx.Save(ctx, &calls.Change{Call: c})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, "cache-call-000000002")
		if err != nil {
			return err
		}
		if st := c.User("carol").State; st != calls.StateInviting {
			t.Errorf("carol is %s to the writer, her row says inviting", st)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCached(t, s, []string{"cache-call-000000002"}, "an unmarked change")
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
		// Derived from the users (calls.PresenceMatters): an invitee
		// pending in an untracked call makes it one presence can change.
		"presence_matters": func(c *calls.Call) {
			c.Users = append(c.Users, &calls.CallUser{UserID: "bob", State: calls.StateInviting})
		},
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
	if n := strings.Count(sqlUpdateCallSeq, "?"); n != len(changes) {
		t.Errorf("sqlUpdateCallSeq has %d placeholders, the test changes %d columns: a column is missing here", n, len(changes))
	}
	if n := strings.Count(sqlUpdateCall, "?"); n != len(changes)+1 { // and the seq
		t.Errorf("sqlUpdateCall has %d placeholders, want the %d columns and the seq", n, len(changes))
	}
}

// userRow is what readUserRow reads of a user's row in a call.
type userRow struct {
	state     string
	timeoutAt int64
	busy      int
}

func readUserRow(t *testing.T, s *Store, callID, user string) userRow {
	t.Helper()
	var r userRow
	err := s.rdb.QueryRow(`SELECT u.state, u.timeout_at, u.busy FROM call_users u JOIN calls c ON c.seq = u.call_seq
		WHERE c.id = ? AND u.user_id = ?`, callID, user).Scan(&r.state, &r.timeoutAt, &r.busy)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A user who quits an advanced call is no longer busy, and is busy again
// on joining it again, though neither changes a deadline of theirs. The
// flag is in no calls.Call, so the cache-mirror walk cannot see a write
// that leaves it wrong.
func TestRejoinMakesTheUserBusyAgain(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	svc := calls.NewService(calls.Options{Store: s})
	bob := calls.Actor{UserID: "bob"}
	r, err := svc.Invite(ctx, calls.Actor{UserID: "alice"}, calls.InviteInput{Invitees: []string{"bob", "carol"}, Mode: calls.ModeAdvanced})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Accept(ctx, bob, r.CallID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Quit(ctx, bob, r.CallID, calls.LeaveInput{}); err != nil {
		t.Fatal(err)
	}
	if row := readUserRow(t, s, r.CallID, "bob"); row.busy != 0 {
		t.Fatalf("bob's row after quitting: %+v, want not busy", row)
	}
	if _, err := svc.Join(ctx, bob, r.CallID, ""); err != nil {
		t.Fatal(err)
	}
	if row := readUserRow(t, s, r.CallID, "bob"); row.busy != 1 || row.state != string(calls.StateAccepted) {
		t.Fatalf("bob's row after joining again: %+v, want accepted and busy", row)
	}
}
