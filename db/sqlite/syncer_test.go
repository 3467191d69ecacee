package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/wait"
)

// gatedSync replaces s's WAL fsync with one that signals entered, waits
// for gate and then makes the real fsync; done counts the completed ones.
// Set before the first write: the syncer reads it after a channel
// receive that follows the write. Call open to let the fsyncs pass; a
// test that fails before does so at its end, so the store can close.
func gatedSync(t *testing.T, s *Store) (entered chan struct{}, open func(), done *atomic.Int64) {
	return gatedSyncFailing(t, s, nil)
}

// gatedSyncFailing is gatedSync whose fsyncs fail with fail, when set.
func gatedSyncFailing(t *testing.T, s *Store, fail error) (entered chan struct{}, open func(), done *atomic.Int64) {
	entered, gate, done := make(chan struct{}, 16), make(chan struct{}), new(atomic.Int64)
	open = sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	real := s.syncWAL
	s.syncWAL = func() error {
		entered <- struct{}{}
		<-gate
		err := fail
		if err == nil {
			err = real()
		}
		done.Add(1)
		return err
	}
	return entered, open, done
}

// The order that makes FULL's guarantee hold with the fsync out of the
// writer: a request is answered only after an fsync that began after its
// batch committed, while the writer goes on committing the next batch.
func TestAnswerOnlyAfterTheWALIsSynced(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, synced := gatedSync(t, s)

	// a commits, and its fsync blocks.
	a := goWrite(s, ctx, insertEvent("a"))
	<-entered
	// Committed, visible to SQL, but not to a stream: not durable yet.
	if n := count(t, s, "events WHERE user_id = 'a'"); n != 1 {
		t.Fatalf("a's event rows = %d, want 1 (committed)", n)
	}
	if evs, err := s.EventsAfter(ctx, "a", 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("EventsAfter(a) during its fsync = %d events (%v), want none", len(evs), err)
	}

	// b runs while a's fsync is still in flight (pipelining).
	ran := make(chan struct{})
	b := goWrite(s, ctx, func(tx *sqlx.Tx) error {
		defer close(ran)
		return insertEvent("b")(tx)
	})
	<-ran
	select {
	case err := <-a:
		t.Fatalf("a answered (%v) while its fsync is blocked", err)
	case err := <-b:
		t.Fatalf("b answered (%v) while no fsync covers it", err)
	default:
	}

	open() // every fsync from now on passes
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	if n := synced.Load(); n < 1 {
		t.Fatalf("a answered after %d fsyncs, want ≥ 1", n)
	}
	if err := <-b; err != nil {
		t.Fatal(err)
	}
	// The fsync in flight when b committed does not cover it: b needed
	// a second one.
	if n := synced.Load(); n < 2 {
		t.Fatalf("b answered after %d fsyncs, want ≥ 2", n)
	}
	if evs, err := s.EventsAfter(ctx, "a", 0, 10); err != nil || len(evs) != 1 {
		t.Fatalf("EventsAfter(a) once durable = %d events (%v), want 1", len(evs), err)
	}
}

// The durable feed (OnDurable) gets a batch's events after the fsync that
// makes them durable has returned and before any of its writes is
// answered, so a stream can show an event no sooner than a power cut
// would keep it, and no later than its request learns of it.
func TestDurableFeedFollowsTheFsync(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, synced := gatedSync(t, s)
	type feed struct {
		ids    []int64
		synced int64
	}
	fed, release := make(chan feed, 4), make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the store closes: a failing test must not hang
	s.OnDurable(func(evs []calls.Event) {
		f := feed{synced: synced.Load()}
		for _, ev := range evs {
			f.ids = append(f.ids, ev.ID)
		}
		fed <- f
		<-release // the answer must wait for the feed
	})
	save := func(ch *calls.Change) error {
		return s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) })
	}
	a := make(chan error, 1)
	go func() { a <- save(storetest.NewCall("feed-a", "alice", 1000, "bob", "carol")) }()
	// A feed before the fsync would block it (the hook waits for release),
	// so wait for either, never for one alone.
	select {
	case <-entered:
	case f := <-fed:
		t.Fatalf("fed %v before the fsync began", f.ids)
	case <-time.After(10 * time.Second):
		t.Fatal("no fsync and no feed 10s after the write")
	}
	select {
	case f := <-fed:
		t.Fatalf("fed %v before the fsync returned", f.ids)
	default:
	}
	open()
	var f feed
	select {
	case f = <-fed:
	case <-time.After(10 * time.Second):
		t.Fatal("no feed 10s after the fsync was let through")
	}
	if f.synced < 1 {
		t.Errorf("fed after %d fsyncs, want 1", f.synced)
	}
	select {
	case err := <-a:
		t.Fatalf("answered (%v) while the feed runs", err)
	case <-time.After(20 * time.Millisecond):
	}
	letGo()
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	evs, err := s.EventsAfter(ctx, "bob", 0, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("bob's log: %v, %v", evs, err)
	}
	carol, err := s.EventsAfter(ctx, "carol", 0, 10)
	if err != nil || len(carol) != 1 {
		t.Fatalf("carol's log: %v, %v", carol, err)
	}
	if want := []int64{evs[0].ID, carol[0].ID}; fmt.Sprint(f.ids) != fmt.Sprint(want) {
		t.Errorf("fed %v, want the logged %v", f.ids, want)
	}
}

// The requests that arrive during an fsync run at once but wait in one
// open transaction, committed when the fsync ends: one commit and one
// fsync for all of them.
func TestRequestsDuringAnFsyncShareTheNextCommit(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, synced := gatedSync(t, s)
	first := goWrite(s, ctx, insertEvent("first"))
	<-entered
	var ran atomic.Int64
	var waiting []<-chan error
	for i := range 5 {
		waiting = append(waiting, goWrite(s, ctx, func(tx *sqlx.Tx) error {
			ran.Add(1)
			return insertEvent(fmt.Sprint("u", i))(tx)
		}))
	}
	wait.For(t, 5*time.Second, "the 5 requests ran", func() bool { return ran.Load() == 5 })
	if n := s.commits.Load(); n != 1 {
		t.Errorf("%d commits while the first fsync is in flight, want 1 (the others wait, open)", n)
	}
	open()
	for _, w := range append(waiting, first) {
		if err := <-w; err != nil {
			t.Fatal(err)
		}
	}
	if c, n := s.commits.Load(), synced.Load(); c != 2 || n != 2 {
		t.Errorf("6 requests answered after %d commits and %d fsyncs, want 2 and 2", c, n)
	}
}

// After a failed fsync nothing more is written: the pages may be lost
// even though a retry would report success. Nothing of the batch reaches
// the durable feed either.
func TestFailedWALSyncStopsWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	s.syncWAL = func() error { return errors.New("EIO") }
	var fed atomic.Int64
	s.OnDurable(func(evs []calls.Event) { fed.Add(int64(len(evs))) })
	err := s.Update(ctx, func(tx calls.Tx) error {
		return tx.Save(ctx, storetest.NewCall("fsync-fails", "alice", 1000, "bob"))
	})
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("write with a failing fsync: %v, want unavailable", err)
	}
	if n := fed.Load(); n != 0 {
		t.Errorf("%d events fed from a batch whose fsync failed", n)
	}
	if err := <-goWrite(s, ctx, insertEvent("b")); !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("write after a failed fsync: %v, want unavailable", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after a failed fsync succeeded; want the store reported down")
	}
	if n := count(t, s, "events WHERE user_id = 'b'"); n != 0 {
		t.Errorf("b's event written after the failed fsync")
	}
}

// The WAL fsynced is the one SQLite writes: beside the database file a
// symlink points to, not beside the symlink.
func TestSyncsTheWALOfASymlinkedDatabase(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "data", "real.db")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "callsig.db")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, link)
	if err := <-goWrite(s, context.Background(), insertEvent("a")); err != nil {
		t.Fatal(err)
	}
	if want := target + "-wal"; s.wal.path != want {
		t.Fatalf("fsyncs %s, want %s", s.wal.path, want)
	}
	if _, err := os.Stat(s.wal.path); err != nil {
		t.Fatalf("the WAL fsynced does not exist: %v", err)
	}
	if s.syncs.Load() == 0 {
		t.Fatal("a write was answered without an fsync")
	}
}

// The requests that ran in the batch left open during the fsync that
// fails are rolled back, not committed: after a failed fsync nothing more
// is committed, not even what was already executed.
func TestFailedWALSyncRollsBackTheOpenBatch(t *testing.T) {
	s := openTest(t)
	a, b, open := batchOpenDuringAFailingFsync(t, s)
	open()
	for name, ch := range map[string]<-chan error{"a": a, "b": b} {
		if err := <-ch; !errors.Is(err, calls.ErrUnavailable) {
			t.Errorf("%s: %v, want unavailable", name, err)
		}
	}
	if n := count(t, s, "events WHERE user_id = 'b'"); n != 0 {
		t.Errorf("b's event was committed after the failed fsync")
	}
}

// batchOpenDuringAFailingFsync writes a, whose batch commits and waits for
// an fsync that will fail, then b, which runs in the next batch, left open
// meanwhile. It returns their answers and the function that lets the
// fsync go on (and fail).
func batchOpenDuringAFailingFsync(t *testing.T, s *Store) (a, b <-chan error, open func()) {
	t.Helper()
	ctx := context.Background()
	entered, open, _ := gatedSyncFailing(t, s, errors.New("EIO"))
	a = goWrite(s, ctx, insertEvent("a"))
	<-entered
	ran := make(chan struct{})
	b = goWrite(s, ctx, func(tx *sqlx.Tx) error {
		defer close(ran)
		return insertEvent("b")(tx)
	})
	<-ran // b executed in the open batch during a's fsync
	return a, b, open
}

// A stored answer is replayed only once durable: the read pool sees the
// record as soon as it is committed, during its fsync.
func TestIdempotencyLookupWaitsForTheFsync(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, synced := gatedSync(t, s)
	rec := calls.IdempotencyRecord{Scope: "alice", Key: "k1", Fingerprint: "f", CreatedAt: 1, ExpiresAt: 1 << 40}
	put := make(chan error, 1)
	go func() {
		_, err := s.PutIdempotency(ctx, rec)
		put <- err
	}()
	<-entered // committed, its fsync blocked
	if n := count(t, s, "idempotency_keys WHERE key = 'k1'"); n != 1 {
		t.Fatalf("record rows = %d, want 1 (committed)", n)
	}
	type lookup struct {
		rec    *calls.IdempotencyRecord
		err    error
		synced int64
	}
	got := make(chan lookup, 1)
	go func() {
		r, err := s.LookupIdempotency(ctx, "alice", "k1", 2)
		got <- lookup{r, err, synced.Load()}
	}()
	wait.For(t, 5*time.Second, "the lookup to wait for the fsync", func() bool { return s.durableWaits.Load() > 0 })
	open()
	l := <-got
	if l.err != nil || l.rec == nil {
		t.Fatalf("lookup: %+v, %v", l.rec, l.err)
	}
	if l.synced < 1 {
		t.Fatal("the record was replayed before its fsync completed")
	}
	if err := <-put; err != nil {
		t.Fatal(err)
	}
}

// The reads that return call state (a GET of a call or of a user's calls,
// a new stream's list of live invitations) see a commit whose fsync is
// in flight: they answer only once it is durable.
func TestReadsOfCallStateWaitForTheFsync(t *testing.T) {
	for name, read := range map[string]func(s *Store) (int, error){
		"Call": func(s *Store) (int, error) {
			_, err := s.Call(context.Background(), "c1")
			return 1, err
		},
		"ListCalls": func(s *Store) (int, error) {
			l, err := s.ListCalls(context.Background(), "bob", 0, 10)
			return len(l), err
		},
		"PendingInvitations": func(s *Store) (int, error) {
			evs, err := s.PendingInvitations(context.Background(), "bob", 10)
			return len(evs), err
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := openTest(t)
			ctx := context.Background()
			entered, open, synced := gatedSync(t, s)
			saved := make(chan error, 1)
			go func() {
				ch := storetest.NewCall("c1", "alice", 1_000, "bob")
				saved <- s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) })
			}()
			<-entered // committed, its fsync blocked
			type result struct {
				n      int
				err    error
				synced int64
			}
			got := make(chan result, 1)
			go func() {
				n, err := read(s)
				got <- result{n, err, synced.Load()}
			}()
			wait.For(t, 5*time.Second, "the read to wait for the fsync", func() bool { return s.durableWaits.Load() > 0 })
			open()
			r := <-got
			if r.err != nil || r.n != 1 || r.synced < 1 {
				t.Fatalf("read %d (%v) after %d fsyncs; want 1 after ≥ 1", r.n, r.err, r.synced)
			}
			if err := <-saved; err != nil {
				t.Fatal(err)
			}
		})
	}
}
