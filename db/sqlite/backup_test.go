package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/storetest"
)

// A backup of a store that keeps writing holds whole transactions (each
// call with its event), is readable by its owner only, and moves the ids
// on behind a restore mark: a store opened on it gives its next id past
// the gap, and tells the ids in the gap from those it holds.
func TestBackupOfARunningStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, out := filepath.Join(dir, "callsig.db"), filepath.Join(dir, "backup.db")
	s := openAt(t, path)
	var saved atomic.Int64
	save := func() error {
		i := saved.Load()
		err := s.Update(ctx, func(tx calls.Tx) error {
			return tx.Save(ctx, storetest.NewCall(fmt.Sprintf("c%07d", i), "alice", 1_000, "bob"))
		})
		if err == nil {
			saved.Add(1)
		}
		return err
	}
	for range 20 {
		if err := save(); err != nil {
			t.Fatal(err)
		}
	}
	stop, wrote := make(chan struct{}), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writes go on during the backup
		defer wg.Done()
		for {
			select {
			case <-stop:
				wrote <- nil
				return
			default:
			}
			if err := save(); err != nil {
				wrote <- err
				return
			}
		}
	}()
	for saved.Load() < 40 {
		time.Sleep(time.Millisecond)
	}
	rep, err := Backup(ctx, path, out, time.UnixMilli(5_000))
	close(stop)
	wg.Wait()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != rep.Bytes {
		t.Fatalf("backup file: %v %v, report %+v", fi, err, rep)
	}

	b := openAt(t, out)
	nCalls, events := count(t, b, "calls"), count(t, b, "events WHERE user_id = 'bob'")
	if nCalls < 20 || events != nCalls || int64(nCalls) != rep.LastEventID {
		t.Fatalf("backup holds %d calls and %d events of bob, last event id %d: want one event per call", nCalls, events, rep.LastEventID)
	}
	last, err := b.LastEventID(ctx)
	if err != nil || last != rep.LastEventID+RestoreGap || rep.FirstNewID != last+1 {
		t.Fatalf("the backup's last event id %d (%v), report %+v: want %d", last, err, rep, rep.LastEventID+RestoreGap)
	}
	for id, want := range map[int64]bool{rep.LastEventID: false, rep.LastEventID + 1: true, last - 1: true, last: false, last + 1: false, 0: false} {
		if got := b.NeverGiven(id); got != want {
			t.Errorf("backup: NeverGiven(%d) = %v, want %v", id, got, want)
		}
		if s.NeverGiven(id) {
			t.Errorf("the original: NeverGiven(%d) = true", id)
		}
	}
	storetest.Save(t, b, storetest.NewCall("after-restore", "alice", 9_000, "bob"))
	var id int64
	if err := b.rdb.Get(&id, "SELECT id FROM events WHERE call_id = 'after-restore'"); err != nil || id != rep.FirstNewID {
		t.Fatalf("first event on the backup: id %d (%v), want %d", id, err, rep.FirstNewID)
	}
	// The mark is no user's event.
	got, err := b.EventsAfter(ctx, "", 0, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("events of user '': %v %v", got, err)
	}
	if list, err := b.EventsAfter(ctx, "bob", rep.LastEventID, 10); err != nil || len(list) != 1 || list[0].ID != rep.FirstNewID {
		t.Fatalf("bob's events after the backup's last: %+v %v", list, err)
	}
}

// A backup never writes over an existing file, nor leaves a file behind
// when it fails.
func TestBackupRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "callsig.db")
	s := openAt(t, path)
	storetest.Save(t, s, storetest.NewCall("c1", "alice", 1_000, "bob"))

	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Backup(ctx, path, existing, time.Now()); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("backup over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("the existing file was changed: %q", b)
	}

	other := filepath.Join(dir, "other.db")
	o, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Exec("CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	o.Close()
	out := filepath.Join(dir, "out.db")
	if _, err := Backup(ctx, other, out, time.Now()); err == nil || !strings.Contains(err.Error(), "not a callsig database") {
		t.Fatalf("backup of another database: %v", err)
	}
	if _, err := Backup(ctx, filepath.Join(dir, "missing.db"), out, time.Now()); err == nil {
		t.Fatal("backup of a missing file succeeded")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed backup left %s: %v", out, err)
	}
}
