package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/goleak"

	"callsig/calls"
	"callsig/db"
	"callsig/db/storetest"
	"callsig/internal/wait"
)

// holdWriter occupies the writer goroutine until the returned func is
// called, so the requests queued meanwhile form the next batch.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, gate := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(context.Background(), func(*sqlx.Tx) error {
			close(started)
			<-gate
			return nil
		})
	}()
	<-started
	return func() {
		close(gate)
		if err := <-done; err != nil {
			t.Errorf("holding write: %v", err)
		}
	}
}

// waitQueued waits until n requests are queued behind the held writer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	wait.For(t, 5*time.Second, fmt.Sprintf("%d requests queued", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue) == n
	})
}

// inOneBatch runs fns as one batch, in order (the writer held until all
// are queued), and returns their outcomes in the same order.
func inOneBatch(t *testing.T, s *Store, fns ...func(tx *sqlx.Tx) error) []error {
	t.Helper()
	reqs := make([]batchReq, len(fns))
	for i, fn := range fns {
		reqs[i] = batchReq{fn: fn}
	}
	return inOneBatchOf(t, s, reqs...)
}

// batchReq is a request for inOneBatchOf: a change to calls (writeCalls)
// or any other write.
type batchReq struct {
	calls bool
	fn    func(tx *sqlx.Tx) error
}

// inOneBatchOf is inOneBatch for requests queued through write or
// writeCalls, as each says.
func inOneBatchOf(t *testing.T, s *Store, reqs ...batchReq) []error {
	t.Helper()
	release := holdWriter(t, s)
	done := make([]chan error, len(reqs))
	for i, r := range reqs {
		done[i] = make(chan error, 1)
		go func() {
			if r.calls {
				done[i] <- s.writeCalls(context.Background(), r.fn)
			} else {
				done[i] <- s.write(context.Background(), r.fn)
			}
		}()
		waitQueued(t, s, i+1)
	}
	release()
	errs := make([]error, len(reqs))
	for i, d := range done {
		errs[i] = <-d
	}
	return errs
}

// breakTx ends the transaction behind the writer's back, leaving nothing
// to commit.
func breakTx(tx *sqlx.Tx) error {
	_, err := tx.Exec("ROLLBACK")
	return err
}

// goWrite queues one write and returns where its outcome arrives.
func goWrite(s *Store, ctx context.Context, fn func(tx *sqlx.Tx) error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.write(ctx, fn) }()
	return done
}

func insertEvent(user string) func(tx *sqlx.Tx) error {
	return func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`INSERT INTO events (user_id, type, data, time) VALUES (?, 'test', '{}', 1)`, user)
		return err
	}
}

// saveCalls saves n new calls, each in an Update of its own, all at once.
func saveCalls(t *testing.T, s *Store, n int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ch := storetest.NewCall(fmt.Sprintf("c%03d", i), "alice", 1000, "bob")
			if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

func TestConcurrentUpdatesAllCommit(t *testing.T) {
	s := openTest(t)
	saveCalls(t, s, 200)
	if n := count(t, s, "calls"); n != 200 {
		t.Errorf("%d calls stored, want 200", n)
	}
	t.Logf("200 updates in %d commits", s.commits.Load())
}

// The writer's totals count every write answered, each fsync, and times
// that add up: no write waits longer in the queue than it takes in all.
func TestWriterStatsCountTheWrites(t *testing.T) {
	s := openTest(t)
	before := s.WriterStats()
	saveCalls(t, s, 50)
	st := s.WriterStats()
	if n := st.Writes - before.Writes; n != 50 {
		t.Errorf("%d writes counted, want 50", n)
	}
	commits, syncs := st.Commits-before.Commits, st.Syncs-before.Syncs
	if commits < 1 || commits > 50 || syncs < 1 || syncs > commits {
		t.Errorf("%d commits and %d fsyncs for 50 writes", commits, syncs)
	}
	latency, wait := st.Latency-before.Latency, st.Wait-before.Wait
	if latency <= 0 || wait <= 0 || wait > latency || st.Busy <= before.Busy || st.Sync <= before.Sync {
		t.Errorf("latency %v, wait %v, busy %v, sync %v: want positive times, the wait within the latency", latency, wait, st.Busy-before.Busy, st.Sync-before.Sync)
	}
}

func TestFailingRequestsFailAloneInTheirBatch(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	before := s.commits.Load()
	release := holdWriter(t, s)

	errBoom := errors.New("boom")
	first := goWrite(s, ctx, insertEvent("first"))
	waitQueued(t, s, 1)
	failing := goWrite(s, ctx, func(tx *sqlx.Tx) error {
		if err := insertEvent("failing")(tx); err != nil {
			return err
		}
		return errBoom
	})
	waitQueued(t, s, 2)
	panicking := goWrite(s, ctx, func(tx *sqlx.Tx) error {
		if err := insertEvent("panicking")(tx); err != nil {
			return err
		}
		panic("kaboom")
	})
	waitQueued(t, s, 3)
	var sawFirst int
	last := goWrite(s, ctx, func(tx *sqlx.Tx) error {
		// A later request in the batch sees the earlier ones' changes.
		if err := tx.Get(&sawFirst, `SELECT COUNT(*) FROM events WHERE user_id = 'first'`); err != nil {
			return err
		}
		return insertEvent("last")(tx)
	})
	waitQueued(t, s, 4)
	release()

	if err := <-first; err != nil {
		t.Errorf("first: %v", err)
	}
	if err := <-failing; !errors.Is(err, errBoom) {
		t.Errorf("failing: err = %v, want its own error", err)
	}
	var perr *db.PanicError
	if err := <-panicking; !errors.As(err, &perr) || perr.Value != "kaboom" || len(perr.Stack) == 0 {
		t.Errorf("panicking: err = %v, want a *db.PanicError with the value and a stack", err)
	}
	if err := <-last; err != nil {
		t.Errorf("last: %v", err)
	}
	if sawFirst != 1 {
		t.Errorf("the last request saw %d of the first's rows, want 1", sawFirst)
	}
	// One commit for the holding request, one for the batch of four.
	if got := s.commits.Load() - before; got != 2 {
		t.Errorf("the four requests took %d commits, want 1 batch", got-1)
	}
	for user, want := range map[string]int{"first": 1, "failing": 0, "panicking": 0, "last": 1} {
		if n := count(t, s, "events WHERE user_id = ?", user); n != want {
			t.Errorf("%s left %d rows, want %d", user, n, want)
		}
	}
}

func TestCancelledRequestIsSkipped(t *testing.T) {
	s := openTest(t)
	release := holdWriter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	ran := false
	done := goWrite(s, ctx, func(tx *sqlx.Tx) error { ran = true; return nil })
	waitQueued(t, s, 1)
	cancel()
	release()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if ran {
		t.Error("the cancelled request's fn ran")
	}
}

func TestBrokenTransactionFailsTheWholeBatch(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	// Ending the transaction behind the writer's back leaves nothing to
	// commit: the request before it, already run, must not be acknowledged.
	errs := inOneBatch(t, s, insertEvent("ok"), breakTx)
	if errs[0] == nil {
		t.Error("a request of a batch that could not commit was acknowledged")
	}
	if errs[1] == nil {
		t.Error("the breaking request succeeded")
	}
	if n := count(t, s, "events"); n != 0 {
		t.Errorf("%d events stored, want 0", n)
	}
	// The writer recovers for the next batch.
	if err := s.write(ctx, insertEvent("after")); err != nil {
		t.Fatalf("write after a broken batch: %v", err)
	}
	if n := count(t, s, "events WHERE user_id = 'after'"); n != 1 {
		t.Errorf("write after a broken batch stored %d rows", n)
	}
}

func TestCloseDrainsQueuedWrites(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	release := holdWriter(t, s)
	var queued []<-chan error
	for i := range 5 {
		queued = append(queued, goWrite(s, ctx, insertEvent(fmt.Sprint("u", i))))
		waitQueued(t, s, i+1)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	wait.For(t, 5*time.Second, "Close to mark the store closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	})
	if err := s.write(ctx, insertEvent("late")); !errors.Is(err, db.ErrClosed) {
		t.Errorf("write after Close began: err = %v, want db.ErrClosed", err)
	}
	release()
	for i, done := range queued {
		if err := <-done; err != nil {
			t.Errorf("queued write %d: %v", i, err)
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestNoGoroutineLeftAfterClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := Open(context.Background(), t.TempDir()+"/leak.db", Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	storetest.Save(t, s, storetest.NewCall("c1", "alice", 1000, "bob"))
	if _, err := s.Call(ctx, "c1"); err != nil {
		t.Error(err)
	}
	if _, err := s.ListCalls(ctx, "bob", 0, 10); err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
