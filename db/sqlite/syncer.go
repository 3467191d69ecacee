package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"callsig/calls"
)

// Pipelined durability.
//
// With synchronous=FULL, SQLite fsyncs the WAL inside COMMIT, and the
// writer goroutine sits idle for the whole fsync: nothing else can be
// executed meanwhile, and every request of the next batch waits for it.
// Here the writer connection runs with synchronous=NORMAL (a COMMIT appends
// its WAL frames and returns without syncing) and the writer hands each
// committed batch to a second goroutine, the syncer, which fsyncs the -wal
// file and only then answers the batch's requests. The writer executes
// batch N+1 while batch N's fsync is in flight; one fsync covers every
// batch committed before it started.
//
// Why it is as durable as FULL: a request is answered only after an fsync
// of the WAL file that began after its COMMIT had written its frames, and
// fsync (on Linux, per inode, whichever descriptor wrote) makes every frame
// written before it durable, with the file's size. Pages that a checkpoint
// moves into the database file are synced by SQLite itself (NORMAL syncs
// the WAL before a checkpoint and the database after it), and a WAL
// restart only overwrites frames a completed checkpoint has synced. So
// after a power cut, every acknowledged request is on disk, as with FULL.
//
// What differs from FULL is what other readers may see before the fsync:
// a committed batch is visible to the read pool at once. The event log
// hides it (Store.durableEvent caps what a stream reads, and LastEventID
// is that cap); every other read (Store.read: a GET of a call, of a
// user's calls, of webhook deliveries; a new stream's list of live
// invitations; a stored answer replayed for an Idempotency-Key) waits,
// after reading, until every commit it could have seen is durable
// (waitDurable: at most the fsync in flight); a webhook's claim is a
// write, answered after a later fsync.
// So nothing a client or a webhook receiver sees can be taken back by a
// power cut, and a GET never shows a state its stream has no events for
// yet.
//
// A failed fsync is not retried: after one, Linux may have dropped the
// dirty pages and reports success next time (the "fsyncgate" lesson
// PostgreSQL learnt). The store stops writing: the batch left open during
// that fsync is rolled back, every later write is unavailable, /readyz
// fails, and the log says so; restarting the process recovers from what
// the disk really holds. (The batches committed before the failure and
// answered 503 may or may not survive: as with any 503, the client
// retries with its Idempotency-Key.)
//
// The WAL fsynced is the one SQLite writes, found with PRAGMA
// database_list (a symlinked database keeps its WAL beside the target).

// committedBatch is a batch the writer has run, waiting for its fsync.
type committedBatch struct {
	batch []*writeRequest
	errs  []error // each request's own outcome
	err   error   // the transaction's failure: nothing of it is stored
	// lastEvent is the log's highest event id once the batch committed.
	lastEvent int64
	// seq numbers the batch's COMMIT (0: it never got that far).
	seq int64
	// events are those of the batch's writes that succeeded, in id order
	// (see Store.OnDurable).
	events []calls.Event
}

// errSyncFailed is what writes get after an fsync of the WAL failed, and
// errStopped the same as unavailable (503).
var (
	errSyncFailed = errors.New("db: an fsync of the SQLite WAL failed; the store refuses writes until restarted")
	errStopped    = fmt.Errorf("%w: %w", calls.ErrUnavailable, errSyncFailed)
)

// walSyncer fsyncs a database's -wal file.
type walSyncer struct {
	// path is the -wal file SQLite writes: the one beside the database
	// file SQLite opened (PRAGMA database_list), symlinks resolved, not
	// the path callsig was given.
	path string
	f    *os.File // nil until the first sync
	// committed is set once a commit has been handed to the syncer: from
	// then on a missing WAL is an error, not "nothing written yet".
	committed bool
}

// sync makes every frame written to the WAL so far durable. It reopens the
// file when it is not the one held (SQLite deletes the WAL when the last
// connection closes; another process may have), and then syncs the
// directory too, so a newly created WAL file's entry survives as well.
func (w *walSyncer) sync() error {
	if w.f != nil {
		held, err1 := w.f.Stat()
		cur, err2 := os.Stat(w.path)
		if err1 != nil || err2 != nil || !os.SameFile(held, cur) {
			w.close()
		}
	}
	if w.f == nil {
		f, err := os.OpenFile(w.path, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) && !w.committed {
			return nil // nothing written yet: nothing to make durable
		}
		if err != nil {
			return fmt.Errorf("db: open %s: %w", w.path, err)
		}
		w.f = f
		if err := syncDir(filepath.Dir(w.path)); err != nil {
			return err
		}
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("db: fsync %s: %w", w.path, err)
	}
	return nil
}

func (w *walSyncer) close() {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
}

// syncDir fsyncs a directory, so the entries created in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("db: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("db: fsync %s: %w", dir, err)
	}
	return nil
}

// runSyncer answers the batches the writer committed, in commit order,
// each after an fsync that began after its commit. It returns when
// s.toSync is closed and drained.
func (s *Store) runSyncer() {
	defer s.wal.close()
	for first := range s.toSync {
		pending := []committedBatch{first}
	more: // every batch committed meanwhile shares the fsync
		for {
			select {
			case b, ok := <-s.toSync:
				if !ok {
					break more
				}
				pending = append(pending, b)
			default:
				break more
			}
		}
		syncErr := s.syncPending(pending)
		s.synced(pending, syncErr)
		if feed := s.durableFeed.Load(); feed != nil && syncErr == nil {
			for _, b := range pending { // in commit order, so in id order
				if b.err == nil && len(b.events) > 0 {
					(*feed)(b.events)
				}
			}
		}
		for _, b := range pending {
			for i, r := range b.batch {
				// A batch that did not commit, or whose fsync failed,
				// answers every request so, even one that failed on its
				// own: its failure may rest on a batch-mate's change
				// that never took effect (a cancel refused as
				// call_ended after an accept in the same batch: a 409
				// for a call still ringing, kept as the answer of its
				// Idempotency-Key for a day). Nothing of it applied, so
				// a retry learns the truth.
				err := b.errs[i]
				switch {
				case b.err != nil:
					err = broken(b.err)
				case syncErr != nil:
					err = broken(syncErr)
				}
				r.done <- err
			}
		}
		// The writer commits its open batch when nothing is in flight.
		if s.inflight.Add(-int64(len(pending))) == 0 {
			select {
			case s.idle <- struct{}{}:
			default:
			}
		}
	}
}

// syncPending fsyncs the WAL for pending, when one of them committed, and
// moves the durable event watermark past their events. After a failed
// fsync it fails every round, those whose batches all failed included:
// a round that succeeded would move syncedSeq past the commits whose
// fsync failed (see synced), and reads would take them for durable.
func (s *Store) syncPending(pending []committedBatch) error {
	if s.syncFailed.Load() {
		return errStopped
	}
	var last int64
	needed := false
	for _, b := range pending {
		if b.err == nil {
			needed = true
			last = max(last, b.lastEvent)
		}
	}
	if !needed {
		return nil
	}
	if s.syncWAL == nil { // COMMIT synced already (FULL inline), or NORMAL
		advance(&s.durableEvent, last)
		return nil
	}
	s.wal.committed = true
	began := time.Now()
	err := s.syncWAL()
	s.stats.synced(began)
	if err != nil {
		s.syncFailed.Store(true)
		s.log.Error("the store stops writing: restart the process", "err", err)
		return fmt.Errorf("%w: %w", calls.ErrUnavailable, err)
	}
	s.syncs.Add(1)
	advance(&s.durableEvent, last)
	return nil
}

// advance raises v to at least n.
func advance(v *atomic.Int64, n int64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}

// synced records that the commits of pending are durable (or that the
// fsync failed) and wakes the readers waiting for it (waitDurable).
func (s *Store) synced(pending []committedBatch, syncErr error) {
	if syncErr == nil {
		var seq int64
		for _, b := range pending {
			seq = max(seq, b.seq)
		}
		advance(&s.syncedSeq, seq)
	}
	s.syncMu.Lock()
	close(s.syncedCh)
	s.syncedCh = make(chan struct{})
	s.syncMu.Unlock()
}

// waitDurable returns once every transaction committed before it was
// called is durable. A read from the pool sees commits whose fsync is
// still in flight; one that acknowledges a write (an idempotent replay of
// a stored answer) must wait for it, as SQLite's FULL would have made it
// wait for the commit itself.
func (s *Store) waitDurable(ctx context.Context) error {
	target := s.commitSeq.Load()
	for {
		s.syncMu.Lock()
		ch := s.syncedCh
		s.syncMu.Unlock()
		switch {
		case s.syncedSeq.Load() >= target:
			return nil
		case s.syncFailed.Load():
			return errStopped
		}
		s.durableWaits.Add(1)
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
