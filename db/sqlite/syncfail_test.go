package sqlite

// The failure paths of the pipelined durability (writer.go, syncer.go):
// a storage that refuses a write or an fsync never has a write answered,
// read or kept as durable when it is not, and every request still gets an
// answer.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// limitFileSize makes every write past size bytes of any file of the test
// process fail (EFBIG; Go drops the SIGXFSZ that comes with it), as a full
// or failing disk makes SQLite's WAL append fail inside COMMIT. It returns
// the function that lifts the limit again.
func limitFileSize(t *testing.T, size int64) (restore func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	lim := old
	lim.Cur = uint64(size)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	done := false
	restore = func() {
		if !done {
			done = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Errorf("restore RLIMIT_FSIZE: %v", err)
			}
		}
	}
	t.Cleanup(restore)
	return restore
}

func walSize(t *testing.T, s *Store) int64 {
	t.Helper()
	fi, err := os.Stat(s.wal.path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A COMMIT that fails because the WAL cannot be written (here EFBIG; on a
// full disk SQLITE_FULL, on a failing one SQLITE_IOERR) is a "not now" of
// the storage: the request gets 503 (calls.ErrUnavailable), never 500.
func TestCommitIOErrorIsUnavailable(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := <-goWrite(s, ctx, insertEvent("first")); err != nil {
		t.Fatal(err)
	}
	restore := limitFileSize(t, walSize(t, s))
	err := <-goWrite(s, ctx, insertEvent("second"))
	restore()
	if err == nil {
		t.Fatal("the write succeeded although the WAL could not grow")
	}
	t.Logf("write whose COMMIT could not write the WAL: %v", err)
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("a COMMIT failing on I/O answered %v: not calls.ErrUnavailable, so the HTTP layer answers 500 (want 503 + Retry-After)", err)
	}
	// The failed COMMIT rolled back and wrote no frame the WAL keeps: once
	// the disk takes writes again, so does the store.
	if err := <-goWrite(s, ctx, insertEvent("third")); err != nil {
		t.Fatalf("write after the failed COMMIT, disk healthy again: %v", err)
	}
}

// After a failed fsync no later round counts as durable, not even one with
// nothing to sync: batch A commits and its fsync fails; batch B (a full
// batch, committed while A's fsync is in flight) fails in COMMIT. B's
// round, with nothing committed, once answered without an error and moved
// syncedSeq past A's commit, so that reads took A for durable: its call
// was served and its stored answer replayed, though A's request got 503.
func TestFailedCommitAfterFailedFsyncStaysUnavailable(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, _ := gatedSyncFailing(t, s, errors.New("EIO"))

	rec := calls.IdempotencyRecord{Scope: "alice", Key: "k1", Fingerprint: "f", CreatedAt: 1, ExpiresAt: 1 << 40,
		Response: calls.StoredResponse{Status: 201, ContentType: "application/json", Body: []byte(`{}`)}}
	// A: a call saved with its stored answer, as a use-case does.
	put := make(chan error, 1)
	go func() {
		put <- s.Update(ctx, func(tx calls.Tx) error {
			if err := tx.Save(ctx, storetest.NewCall("c-a", "alice", 1000, "bob")); err != nil {
				return err
			}
			return tx.PutIdempotencyRecord(ctx, rec)
		})
	}()
	<-entered // A committed; its fsync is held (and will fail)

	// B: maxBatch writes, so the writer commits them while A's fsync is in
	// flight; the WAL cannot grow, so B's COMMIT fails.
	restore := limitFileSize(t, walSize(t, s))
	var bs []<-chan error
	for range maxBatch {
		bs = append(bs, goWrite(s, ctx, insertEvent("b")))
	}
	wait.For(t, 10*time.Second, "B handed to the syncer", func() bool { return s.inflight.Load() == 2 })
	restore()

	open() // A's fsync fails
	if err := <-put; !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("A (fsync failed): %v, want unavailable", err)
	}
	for _, b := range bs {
		if err := <-b; err == nil {
			t.Fatal("a write of B succeeded; the test needs B's COMMIT to fail")
		}
	}
	t.Logf("commitSeq=%d syncedSeq=%d syncFailed=%v", s.commitSeq.Load(), s.syncedSeq.Load(), s.syncFailed.Load())

	// The client of A got 503 and retries with its key: the record must
	// not be replayed as a durable answer.
	if c, err := s.Call(ctx, "c-a"); err == nil && c != nil {
		t.Errorf("GET of call c-a answers its state (%s) as durable although the fsync of its only write failed and that write was answered 503", c.State)
	} else if !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("Call(c-a) after a failed fsync: %v; want unavailable", err)
	}
	got, err := s.LookupIdempotency(ctx, "alice", "k1", 2)
	if err == nil && got != nil {
		t.Errorf("LookupIdempotency replays A's answer (status %d) as durable although A's fsync failed (syncedSeq %d ≥ A's commit)", got.Response.Status, s.syncedSeq.Load())
	} else if !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("LookupIdempotency after a failed fsync: %v, %v; want unavailable", got, err)
	}
}

// GET /webhooks and GET /webhooks/{id} wait for durability, as every read
// but the capped event log does (syncer.go): they showed an endpoint whose
// write was not durable yet, and still after that write's fsync failed and
// its request was answered 503.
func TestWebhookEndpointReadsWaitForTheFsync(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	entered, open, _ := gatedSyncFailing(t, s, errors.New("EIO"))
	e := &webhooks.Endpoint{ID: "ep1", URL: "https://example.com/hook", Secret: "whsec_x", CreatedAt: 1, Enabled: true}
	put := make(chan error, 1)
	go func() { put <- s.PutWebhookEndpoint(ctx, e) }()
	<-entered // committed, its fsync held

	type result struct {
		n   int
		err error
	}
	one := make(chan result, 1)
	go func() {
		got, err := s.WebhookEndpoint(ctx, "ep1")
		n := 0
		if got != nil {
			n = 1
		}
		one <- result{n, err}
	}()
	select {
	case r := <-one:
		if r.n == 1 {
			t.Errorf("WebhookEndpoint returned the endpoint while the fsync of its write is in flight (not durable)")
		}
	case <-time.After(200 * time.Millisecond):
		// waiting for the fsync: what is expected
	}

	open() // the fsync fails: the PUT is answered 503
	if err := <-put; !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("put with a failed fsync: %v, want unavailable", err)
	}
	if list, err := s.WebhookEndpoints(ctx); !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("WebhookEndpoints after the fsync of their write failed: %d endpoint(s), %v; want unavailable", len(list), err)
	}
	if got, err := s.WebhookEndpoint(ctx, "ep1"); !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("WebhookEndpoint after the fsync of its write failed: %v, %v; want unavailable", got, err)
	}
}

// After a failed fsync the WAL's pages may be gone from the page cache
// (fsyncgate): the only safe source is what the disk holds, read back by
// SQLite's recovery at the next start, which checks every frame's
// checksum. So Close leaves the WAL for the next start: it neither
// checkpoints it into the database file (a checkpoint copies frames
// without checking them; the last connection to close used to, copying
// the batch answered 503 into the database file) nor writes more.
func TestCloseAfterFailedFsyncLeavesTheWAL(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	s.syncWAL = func() error { return errors.New("EIO") }
	if err := <-goWrite(s, ctx, insertEvent("lost")); !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("write with a failing fsync: %v, want unavailable", err)
	}
	wal := s.wal.path
	before, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(wal)
	switch {
	case errors.Is(err, os.ErrNotExist):
		t.Errorf("Close after a failed fsync checkpointed and deleted the WAL (it held %d bytes): frames whose fsync failed were copied into the database file", before.Size())
		// What the database file now holds without any WAL.
		dbFile := strings.TrimSuffix(wal, "-wal")
		r, err := sqlx.Open("sqlite", dbFile+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var n int
		if err := r.Get(&n, `SELECT COUNT(*) FROM events WHERE user_id = 'lost'`); err != nil {
			t.Fatal(err)
		}
		t.Logf("rows of the write answered 503 now in the database file itself: %d", n)
	case err != nil:
		t.Fatal(err)
	case after.Size() < before.Size():
		t.Errorf("Close after a failed fsync truncated the WAL from %d to %d bytes", before.Size(), after.Size())
	}
}

// Close while a batch waits for its fsync and another is open: every
// request is answered (the fsync fails: unavailable, not success), Close
// returns, and the writer and syncer goroutines have ended (s.stopped).
func TestCloseWhileWaitingForAFailingFsync(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a, b, open := batchOpenDuringAFailingFsync(t, s)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	wait.For(t, 5*time.Second, "Close to begin", s.isClosed)
	if err := <-goWrite(s, ctx, insertEvent("late")); !errors.Is(err, calls.ErrUnavailable) {
		t.Errorf("write after Close began: %v, want closed (unavailable)", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an fsync is in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	open()
	for name, ch := range map[string]<-chan error{"a": a, "b": b} {
		select {
		case err := <-ch:
			if !errors.Is(err, calls.ErrUnavailable) {
				t.Errorf("%s: %v, want unavailable", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never answered", name)
		}
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	select {
	case <-s.stopped:
	default:
		t.Fatal("writer still running after Close")
	}
}

// A request whose context ends after its transaction committed, while its
// fsync is in flight, still gets the real outcome (here: success), and its
// Idempotency-Key record is then replayable: the client that gave up and
// retries sees the same answer, never a second execution.
func TestCancelledWhileWaitingForTheFsync(t *testing.T) {
	s := openTest(t)
	entered, open, _ := gatedSync(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	rec := calls.IdempotencyRecord{Scope: "alice", Key: "k-cancel", Fingerprint: "f", CreatedAt: 1, ExpiresAt: 1 << 40,
		Response: calls.StoredResponse{Status: 201, ContentType: "application/json", Body: []byte(`{}`)}}
	type out struct {
		stored bool
		err    error
	}
	put := make(chan out, 1)
	go func() {
		stored, err := s.PutIdempotency(ctx, rec)
		put <- out{stored, err}
	}()
	<-entered // committed, fsync held
	cancel()
	select {
	case o := <-put:
		t.Fatalf("answered (%+v) before the fsync completed", o)
	case <-time.After(50 * time.Millisecond):
	}
	open()
	o := <-put
	if o.err != nil || !o.stored {
		t.Fatalf("cancelled request after commit+fsync: stored=%v err=%v; want stored, nil", o.stored, o.err)
	}
	got, err := s.LookupIdempotency(context.Background(), "alice", "k-cancel", 2)
	if err != nil || got == nil {
		t.Fatalf("retry lookup: %v, %v; want the record", got, err)
	}
}

// A request that fills the disk makes SQLite roll back the whole batch's
// transaction (SQLITE_FULL): every request of the batch, not only the one
// that hit it, was undone by the storage and is told "not now" (503).
// Their error used to be the failed ROLLBACK TO ("no such savepoint", a
// plain SQL error) that followed, which the HTTP layer answered with 500.
func TestFullDiskFailsTheWholeBatchAsUnavailable(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	if err := <-goWrite(s, ctx, insertEvent("warm")); err != nil {
		t.Fatal(err)
	}
	if err := <-goWrite(s, ctx, func(tx *sqlx.Tx) error {
		var n int
		if err := tx.Get(&n, `PRAGMA page_count`); err != nil {
			return err
		}
		_, err := tx.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, n))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	big := func(tx *sqlx.Tx) error {
		_, err := tx.Exec(`INSERT INTO events (user_id, type, data, time) VALUES ('x', 't', ?, 1)`, strings.Repeat("x", 200000))
		return err
	}
	errs := inOneBatch(t, s, insertEvent("a"), big, insertEvent("b"))
	for i, err := range errs {
		if err == nil {
			t.Errorf("request %d of a batch whose transaction SQLite rolled back succeeded", i)
		} else if !errors.Is(err, calls.ErrUnavailable) {
			t.Errorf("request %d: %v, want unavailable (503), not a 500", i, err)
		}
	}
}

// signalStore is a calls.Store that says when each use-case's fn has run
// in the writer, so a test can place two use-cases in one batch.
type signalStore struct {
	*Store
	ran chan error
}

func (w signalStore) Update(ctx context.Context, fn func(calls.Tx) error) error {
	return w.Store.Update(ctx, func(tx calls.Tx) error { err := fn(tx); w.ran <- err; return err })
}

// A request that fails on its own in a batch that never becomes durable
// is answered as the batch is (503), not with its own error: that error
// may rest on a batch-mate's change that never took effect. Here bob's
// accept and alice's cancel share a batch; the cancel is refused because
// the accept ended the call; the batch then fails (its COMMIT cannot
// write the WAL, or an fsync before it fails). The call still rings, and
// alice was told call_ended, kept as her Idempotency-Key's answer.
func TestBatchMatesOfAFailedBatchAreUnavailable(t *testing.T) {
	for _, failure := range []string{"fsync", "commit"} {
		t.Run(failure, func(t *testing.T) {
			s := openTest(t)
			ctx := context.Background()
			w := signalStore{s, make(chan error, 16)}
			svc := calls.NewService(calls.Options{Store: w})
			res, err := svc.Invite(ctx, calls.Actor{UserID: "alice"}, calls.InviteInput{Invitees: []string{"bob"}})
			if err != nil {
				t.Fatal(err)
			}
			<-w.ran
			var fail error
			if failure == "fsync" {
				fail = errors.New("EIO")
			}
			entered, open, _ := gatedSyncFailing(t, s, fail)
			warm := goWrite(s, ctx, insertEvent("warm"))
			<-entered // the writer holds its next batch open meanwhile
			accepted, cancelled := make(chan error, 1), make(chan error, 1)
			go func() {
				_, err := svc.Accept(ctx, calls.Actor{UserID: "bob"}, res.CallID, "")
				accepted <- err
			}()
			if err := <-w.ran; err != nil {
				t.Fatalf("accept in the open batch: %v", err)
			}
			go func() {
				_, err := svc.Cancel(ctx, calls.Actor{UserID: "alice"}, res.CallID, calls.CancelInput{})
				cancelled <- err
			}()
			if err := <-w.ran; calls.CodeOf(err) == "" {
				t.Fatalf("premise: the cancel after the accept in the same batch: %v, want refused", err)
			}
			if failure == "commit" {
				defer limitFileSize(t, walSize(t, s))()
			}
			open()
			<-warm
			acc, can := <-accepted, <-cancelled
			if !errors.Is(acc, calls.ErrUnavailable) {
				t.Fatalf("premise: the accept of the failed batch: %v, want unavailable", acc)
			}
			if !errors.Is(can, calls.ErrUnavailable) {
				t.Errorf("the cancel of the failed batch, refused on the accept's change: %v, want unavailable (the call still rings)", can)
			}
		})
	}
}

// A "not found" is an answer like any other read's: it waits for the
// fsync of the deletion it saw. A call pruned, or a webhook deleted, while
// that fsync was in flight was answered 404 at once, and still after the
// fsync failed and the deletion was answered 503, its row kept.
func TestNotFoundWaitsForTheFsyncOfTheDeletion(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		prepare func(*testing.T, *Store)
		remove  func(*Store) error
		read    func(*Store) error
	}{
		"call pruned": {
			prepare: func(t *testing.T, s *Store) {
				ch := storetest.NewCall("c-old", "alice", 1000, "bob")
				ch.Call.State, ch.Call.EndTime = calls.CallEnded, 5
				storetest.Save(t, s, ch)
			},
			remove: func(s *Store) error { _, err := s.PruneCalls(ctx, 10); return err },
			read:   func(s *Store) error { _, err := s.Call(ctx, "c-old"); return err },
		},
		"webhook deleted": {
			prepare: func(t *testing.T, s *Store) {
				e := &webhooks.Endpoint{ID: "ep1", URL: "https://example.com/hook", Secret: "whsec_x", CreatedAt: 1, Enabled: true}
				if err := s.PutWebhookEndpoint(ctx, e); err != nil {
					t.Fatal(err)
				}
			},
			remove: func(s *Store) error { return s.DeleteWebhookEndpoint(ctx, "ep1", 2) },
			read: func(s *Store) error {
				_, err := s.WebhookDeliveries(ctx, "ep1", webhooks.DeliveryQuery{})
				return err
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := openTest(t)
			tc.prepare(t, s)
			entered, open, _ := gatedSyncFailing(t, s, errors.New("EIO"))
			removed := make(chan error, 1)
			go func() { removed <- tc.remove(s) }()
			<-entered // the deletion committed, its fsync held
			read := make(chan error, 1)
			go func() { read <- tc.read(s) }()
			open() // the fsync fails
			if err := <-removed; !errors.Is(err, calls.ErrUnavailable) {
				t.Fatalf("deletion with a failed fsync: %v, want unavailable", err)
			}
			if err := <-read; !errors.Is(err, calls.ErrUnavailable) {
				t.Errorf("read during the deletion's failed fsync: %v, want unavailable (not a not-found that may be taken back)", err)
			}
		})
	}
}
