package sqlite

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jmoiron/sqlx"
	sqlitedriver "modernc.org/sqlite"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
)

// A change to calls runs without a savepoint of its own (runBare). A
// failure that wrote nothing is its own outcome and nobody runs twice;
// any other failure rolls the batch back and runs it again, each request
// in a savepoint, so the failed request leaves nothing and the others
// commit. Once a write that is not a change to calls has succeeded in the
// batch (it may not run twice), the rest keep savepoints and nothing is
// replayed.
func TestBareRequestsReplayOnlyWhenTheyMust(t *testing.T) {
	boom := errors.New("boom")
	type req struct {
		calls bool
		fn    func(s *Store, tx *sqlx.Tx) error
	}
	save := func(id string, then error) req {
		return req{calls: true, fn: func(s *Store, tx *sqlx.Tx) error {
			ctx := context.Background()
			if err := s.callsTx(tx).Save(ctx, storetest.NewCall(id, "alice", 1000, "bob")); err != nil {
				return err
			}
			return then
		}}
	}
	// failsOnce saves id and fails its first run after writing (so the
	// batch is replayed), then succeeds.
	failsOnce := func(id string) req {
		var ran atomic.Bool
		return req{calls: true, fn: func(s *Store, tx *sqlx.Tx) error {
			if err := s.callsTx(tx).Save(context.Background(), storetest.NewCall(id, "alice", 1000, "bob")); err != nil {
				return err
			}
			if !ran.Swap(true) {
				return boom
			}
			return nil
		}}
	}
	refuse := req{calls: true, fn: func(s *Store, tx *sqlx.Tx) error {
		_, err := s.callsTx(tx).Call(context.Background(), "bare-call-nowhere")
		return err
	}}
	panics := req{calls: true, fn: func(*Store, *sqlx.Tx) error { panic("kaboom") }}
	badSQL := req{calls: true, fn: func(_ *Store, tx *sqlx.Tx) error {
		_, err := tx.Exec(`SELECT x FROM nowhere`)
		return err
	}}
	other := req{fn: func(_ *Store, tx *sqlx.Tx) error { return insertEvent("other")(tx) }}
	otherFails := req{fn: func(_ *Store, tx *sqlx.Tx) error {
		if err := insertEvent("other")(tx); err != nil {
			return err
		}
		return boom
	}}
	// A fn that ends the transaction and says nothing, as one that swallowed
	// SQLite's own rollback (on SQLITE_FULL) would.
	breaks := req{calls: true, fn: func(_ *Store, tx *sqlx.Tx) error {
		_ = breakTx(tx)
		return nil
	}}
	failed := func(err error) bool { return err != nil }
	isNotFound := func(err error) bool { return errors.Is(err, calls.ErrCallNotFound) }
	isBoom := func(err error) bool { return errors.Is(err, boom) }
	isPanic := func(err error) bool { pe := (*db.PanicError)(nil); return errors.As(err, &pe) }
	isDriver := func(err error) bool { se := (*sqlitedriver.Error)(nil); return errors.As(err, &se) }
	ok := func(err error) bool { return err == nil }

	for _, tc := range []struct {
		name    string
		reqs    []req
		outcome []func(error) bool
		runs    []int64
		replays int64
		kept    []string // calls that must exist, of bare-call-1..3
	}{
		{"refused before writing", []req{save("bare-call-1", nil), refuse, save("bare-call-3", nil)},
			[]func(error) bool{ok, isNotFound, ok}, []int64{1, 1, 1}, 0, []string{"bare-call-1", "bare-call-3"}},
		{"failed after writing", []req{save("bare-call-1", nil), refuse, save("bare-call-2", boom), save("bare-call-3", nil)},
			[]func(error) bool{ok, isNotFound, isBoom, ok}, []int64{2, 2, 2, 1}, 1, []string{"bare-call-1", "bare-call-3"}},
		{"failed after writing, then succeeded replayed", []req{save("bare-call-1", nil), failsOnce("bare-call-2"), save("bare-call-3", nil)},
			[]func(error) bool{ok, ok, ok}, []int64{2, 2, 1}, 1, []string{"bare-call-1", "bare-call-2", "bare-call-3"}},
		{"panicked", []req{save("bare-call-1", nil), panics, save("bare-call-3", nil)},
			[]func(error) bool{ok, isPanic, ok}, []int64{2, 2, 1}, 1, []string{"bare-call-1", "bare-call-3"}},
		{"driver error", []req{save("bare-call-1", nil), badSQL, save("bare-call-3", nil)},
			[]func(error) bool{ok, isDriver, ok}, []int64{2, 2, 1}, 1, []string{"bare-call-1", "bare-call-3"}},
		{"after another write", []req{save("bare-call-1", nil), other, save("bare-call-2", boom), save("bare-call-3", nil)},
			[]func(error) bool{ok, ok, isBoom, ok}, []int64{1, 1, 1, 1}, 0, []string{"bare-call-1", "bare-call-3"}},
		{"after another write failed", []req{save("bare-call-1", nil), otherFails, save("bare-call-3", nil)},
			[]func(error) bool{ok, isBoom, ok}, []int64{1, 1, 1}, 0, []string{"bare-call-1", "bare-call-3"}},
		// Replayed, the fn breaks the transaction again, now under a
		// savepoint whose RELEASE fails: nothing of the batch commits.
		{"ended the transaction", []req{save("bare-call-1", nil), breaks, save("bare-call-3", nil)},
			[]func(error) bool{failed, failed, failed}, []int64{2, 2, 0}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			var fed []calls.Event // written by the syncer, read after every answer
			s.OnDurable(func(evs []calls.Event) { fed = append(fed, evs...) })
			runs := make([]atomic.Int64, len(tc.reqs))
			reqs := make([]batchReq, len(tc.reqs))
			for i, r := range tc.reqs {
				reqs[i] = batchReq{calls: r.calls, fn: func(tx *sqlx.Tx) error {
					runs[i].Add(1)
					return r.fn(s, tx)
				}}
			}
			errs := inOneBatchOf(t, s, reqs...)
			for i, err := range errs {
				if !tc.outcome[i](err) {
					t.Errorf("request %d answered %v", i, err)
				}
				if n := runs[i].Load(); n != tc.runs[i] {
					t.Errorf("request %d ran %d times, want %d", i, n, tc.runs[i])
				}
			}
			if n := s.replays.Load(); n != tc.replays {
				t.Errorf("%d replays, want %d", n, tc.replays)
			}
			for i := 1; i <= 3; i++ {
				id := fmt.Sprintf("bare-call-%d", i)
				_, err := s.Call(context.Background(), id)
				want := false
				for _, k := range tc.kept {
					want = want || k == id
				}
				switch {
				case want && err != nil:
					t.Errorf("%s: %v, want it committed", id, err)
				case !want && !errors.Is(err, calls.ErrCallNotFound):
					t.Errorf("%s: %v, want it rolled back", id, err)
				}
			}
			checkCached(t, s, []string{"bare-call-1", "bare-call-2", "bare-call-3"}, tc.name)
			checkFed(t, s, fed)
		})
	}
}

// checkFed checks that the events given to the durable feed are the calls'
// events the log holds, each once, in id order: none of a write that
// failed or of a run that a replay undid.
func checkFed(t *testing.T, s *Store, fed []calls.Event) {
	t.Helper()
	rows, err := s.rdb.Query(`SELECT id, call_id FROM events WHERE call_id LIKE 'bare-call-%' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var logged []string
	for rows.Next() {
		var id int64
		var call string
		if err := rows.Scan(&id, &call); err != nil {
			t.Fatal(err)
		}
		logged = append(logged, fmt.Sprintf("%d %s", id, call))
	}
	var got []string
	for _, ev := range fed {
		got = append(got, fmt.Sprintf("%d %s", ev.ID, ev.CallID))
	}
	if strings.Join(got, ", ") != strings.Join(logged, ", ") {
		t.Errorf("fed %v, the log holds %v", got, logged)
	}
}

// unmarkedBareWrite describes a row change by a request running without
// a savepoint (runBare) before it said it writes (reqWrote), "" for any
// other change: a failure after such a change would be taken for one that
// wrote nothing, and the change would commit. The pre-update hook runs on
// the writer goroutine, inside the statement.
func unmarkedBareWrite(s *Store, d sqlitedriver.SQLitePreUpdateData) string {
	if s.reqWrote || !onStack("db/sqlite.(*openBatch).runBare") {
		return ""
	}
	return fmt.Sprintf("op %d on %s by a bare request not marked writing", d.Op, d.TableName)
}

// onStack reports whether the calling goroutine is inside function fn
// (its name ends with fn).
func onStack(fn string) bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// The guard itself: a bare request that writes through its transaction
// without a calls.Tx method is caught, one that writes through Save is not.
func TestUnmarkedBareWriteIsCaught(t *testing.T) {
	s := openTest(t)
	var caught []string
	onRowChange(t, s, func(d sqlitedriver.SQLitePreUpdateData) {
		if msg := unmarkedBareWrite(s, d); msg != "" {
			caught = append(caught, msg) // the writer goroutine only
		}
	})
	storetest.Save(t, s, storetest.NewCall("bare-call-1", "alice", 1000, "bob"))
	if len(caught) != 0 {
		t.Fatalf("a Save was caught: %v", caught)
	}
	if err := s.writeCalls(context.Background(), insertEvent("unmarked")); err != nil {
		t.Fatal(err)
	}
	if len(caught) != 1 || !strings.Contains(caught[0], "events") {
		t.Fatalf("a raw insert in a bare request: caught %v, want one on events", caught)
	}
}

// An Idempotency-Key record is a write too: a bare request that stored one
// and then failed is replayed, and the key stays free.
func TestBareKeyRecordThenFailureLeavesNoKey(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	boom := errors.New("boom")
	rec := calls.IdempotencyRecord{Scope: "alice", Key: "bare-key", Fingerprint: "f",
		Response: calls.StoredResponse{Status: 200}, CreatedAt: 1, ExpiresAt: 1 << 40}
	errs := inOneBatchOf(t, s,
		batchReq{calls: true, fn: func(tx *sqlx.Tx) error {
			return s.callsTx(tx).Save(ctx, storetest.NewCall("bare-call-1", "alice", 1000, "bob"))
		}},
		batchReq{calls: true, fn: func(tx *sqlx.Tx) error {
			if err := s.callsTx(tx).PutIdempotencyRecord(ctx, rec); err != nil {
				return err
			}
			return boom
		}})
	if errs[0] != nil || !errors.Is(errs[1], boom) {
		t.Fatalf("answered %v", errs)
	}
	if n := s.replays.Load(); n != 1 {
		t.Errorf("%d replays, want 1", n)
	}
	if got, err := s.LookupIdempotency(ctx, "alice", "bare-key", 2); err != nil || got != nil {
		t.Errorf("the failed request's key: %+v, %v; want none", got, err)
	}
}

// The events' INSERT keeps the rows it wrote before a failing one (OR
// FAIL, no statement journal): the request fails after writing, and its
// rows go with it, bare (replayed) or in a savepoint.
func TestEventsOfAFailedInsertDoNotCommit(t *testing.T) {
	for _, bare := range []bool{true, false} {
		t.Run(fmt.Sprintf("bare=%t", bare), func(t *testing.T) {
			s := openTest(t)
			ctx := context.Background()
			// A trigger on the writer connection fails the third row.
			if _, err := s.wdb.Exec(`CREATE TEMP TRIGGER poison BEFORE INSERT ON main.events
				WHEN NEW.type = 'poison' BEGIN SELECT RAISE(FAIL, 'poisoned event'); END`); err != nil {
				t.Fatal(err)
			}
			ch := storetest.NewCall("bare-call-2", "alice", 1000, "bob", "carl", "dora", "erin")
			ch.Events[2].Type = "poison"
			save := func(ch *calls.Change) batchReq {
				return batchReq{calls: bare, fn: func(tx *sqlx.Tx) error { return s.callsTx(tx).Save(ctx, ch) }}
			}
			errs := inOneBatchOf(t, s,
				save(storetest.NewCall("bare-call-1", "alice", 1000, "bob")),
				save(ch),
				save(storetest.NewCall("bare-call-3", "alice", 1000, "bob")))
			if errs[0] != nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "poisoned event") || errs[2] != nil {
				t.Fatalf("answered %v", errs)
			}
			for _, u := range []string{"carl", "dora", "erin"} {
				if n := count(t, s, "events WHERE user_id = '"+u+"'"); n != 0 {
					t.Errorf("%d events of the failed insert for %s committed", n, u)
				}
			}
			if n := count(t, s, "events WHERE user_id = 'bob'"); n != 2 {
				t.Errorf("bob has %d events, want the 2 of the calls that committed", n)
			}
		})
	}
}

// A replay runs again the changes to calls that the first run refused: a
// refusal may rest on what an earlier request did in that run, and the
// replay may decide otherwise (a use-case reads the clock and presence).
// Kept, bob was told the call had ended while it rang on; also when his
// client had left meanwhile, as its answer is still recorded under its
// Idempotency-Key.
func TestReplayRunsRefusedChangesAgain(t *testing.T) {
	for name, leaves := range map[string]bool{"client waiting": false, "client left": true} {
		t.Run(name, func(t *testing.T) {
			s := openTest(t)
			ctx := context.Background()
			storetest.Save(t, s, storetest.NewCall("c1", "alice", 1000, "bob"))
			errEnded := errors.New("call ended")
			var runs atomic.Int32
			// The caller-offline grace: ends c1 on the first run; on the
			// replay the caller is back, and nothing is done.
			end := func(tx *sqlx.Tx) error {
				ct := s.callsTx(tx)
				c, err := ct.Call(ctx, "c1")
				if err != nil || runs.Add(1) > 1 {
					return err
				}
				c.State, c.EndTime = calls.CallEnded, 2000
				return ct.Save(ctx, &calls.Change{Call: c})
			}
			// bob's accept: refused while c1 is ended, writing nothing.
			acceptCtx, leave := context.WithCancel(ctx)
			defer leave()
			accept := func(tx *sqlx.Tx) error {
				c, err := s.callsTx(tx).Call(ctx, "c1")
				if err == nil && c.State == calls.CallEnded {
					return errEnded
				}
				return err
			}
			boom := errors.New("boom")
			failsAfterWriting := func(tx *sqlx.Tx) error {
				if leaves {
					leave() // after bob's accept ran, before the replay
				}
				if err := s.callsTx(tx).Save(ctx, storetest.NewCall("c2", "carl", 1000, "dora")); err != nil {
					return err
				}
				return boom
			}
			release := holdWriter(t, s)
			reqs := []struct {
				ctx context.Context
				fn  func(*sqlx.Tx) error
			}{{ctx, end}, {acceptCtx, accept}, {ctx, failsAfterWriting}}
			done := make([]chan error, len(reqs))
			for i, r := range reqs {
				done[i] = make(chan error, 1)
				go func() { done[i] <- s.writeCalls(r.ctx, r.fn) }()
				waitQueued(t, s, i+1)
			}
			release()
			errs := make([]error, len(reqs))
			for i := range done {
				errs[i] = <-done[i]
			}
			if s.replays.Load() != 1 || !errors.Is(errs[2], boom) {
				t.Fatalf("replays %d, last answer %v: want one replay, boom", s.replays.Load(), errs[2])
			}
			c, err := s.Call(ctx, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if c.State != calls.CallStarted || errs[1] != nil {
				t.Errorf("c1 committed %s, bob's accept answered %v: want started and the accept run again (nil)", c.State, errs[1])
			}
		})
	}
}
