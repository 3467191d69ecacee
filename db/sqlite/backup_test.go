package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
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
	rep, err := Backup(ctx, path, out, time.Now().Add(-2*time.Second))
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
	if rep.Mark != rep.LastEventID+RestoreGap {
		t.Fatalf("report %+v: want the mark %d past the last id", rep, RestoreGap)
	}
	// A second copy of the backup, restored later.
	again := filepath.Join(dir, "again.db")
	if raw, err := os.ReadFile(out); err != nil || os.WriteFile(again, raw, 0o600) != nil {
		t.Fatalf("copy the backup: %v", err)
	}

	b := openAt(t, out)
	nCalls, events := count(t, b, "calls"), count(t, b, "events WHERE user_id = 'bob'")
	if nCalls < 20 || events != nCalls || int64(nCalls) != rep.LastEventID {
		t.Fatalf("backup holds %d calls and %d events of bob, last event id %d: want one event per call", nCalls, events, rep.LastEventID)
	}
	// Its first start moved the ids on again, by the 2 s since the backup.
	last, err := b.LastEventID(ctx)
	if err != nil || last <= rep.Mark+2_000*1_000 || last > rep.Mark+60_000*1_000 {
		t.Fatalf("the restored log's last event id %d (%v), report %+v: want the backup's mark and some 2 s of ids past it", last, err, rep)
	}
	for id, want := range map[int64]bool{rep.LastEventID: false, rep.LastEventID + 1: true, rep.Mark - 1: true, rep.Mark + 1: true,
		last - 1: true, last: false, last + 1: false, 0: false} {
		if got := b.NeverGiven(id); got != want {
			t.Errorf("backup: NeverGiven(%d) = %v, want %v", id, got, want)
		}
		if s.NeverGiven(id) {
			t.Errorf("the original: NeverGiven(%d) = true", id)
		}
	}
	storetest.Save(t, b, storetest.NewCall("after-restore", "alice", 9_000, "bob"))
	var id int64
	if err := b.rdb.Get(&id, "SELECT id FROM events WHERE call_id = 'after-restore'"); err != nil || id != last+1 {
		t.Fatalf("first event on the backup: id %d (%v), want %d", id, err, last+1)
	}
	// The marks are no user's events.
	got, err := b.EventsAfter(ctx, "", 0, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("events of user '': %v %v", got, err)
	}
	if list, err := b.EventsAfter(ctx, "bob", rep.LastEventID, 10); err != nil || len(list) != 1 || list[0].ID != last+1 {
		t.Fatalf("bob's events after the backup's last: %+v %v", list, err)
	}
	// A restart is no restore: no new mark.
	b.Close()
	b = openAt(t, out)
	if head, err := b.LastEventID(ctx); err != nil || head != last+1 {
		t.Fatalf("after a restart the last event id is %d (%v), want %d", head, err, last+1)
	}
	// The same backup restored again, later: its ids pass every id the
	// first restored log gave, which are in its gap.
	time.Sleep(5 * time.Millisecond)
	a := openAt(t, again)
	head, err := a.LastEventID(ctx)
	if err != nil || head <= last+1 || !a.NeverGiven(last+1) || a.NeverGiven(head+1) {
		t.Fatalf("the backup restored again: last id %d (%v), the first restore's event %d in its gap: %v", head, err, last+1, a.NeverGiven(last+1))
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

// A WAL that grew while a reader held an old snapshot (a backup's copy)
// is cut back once it restarts (journal_size_limit), through the store's
// own WAL file layer.
func TestWALShrinksAfterAReaderHeldItLong(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, path)
	var limit int
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA journal_size_limit").Scan(&limit); err != nil || limit != walSizeLimit {
		t.Fatalf("journal_size_limit = %d (%v), want %d", limit, err, walSizeLimit)
	}
	// A limit of 1 MiB here, to grow past it quickly.
	if _, err := s.wdb.ExecContext(ctx, "PRAGMA journal_size_limit = 1048576"); err != nil {
		t.Fatal(err)
	}
	reader, err := sql.Open("sqlite", path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rtx, err := reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rtx.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&n); err != nil { // the snapshot is taken
		t.Fatal(err)
	}
	i := 0
	save := func(k int) {
		for range k {
			storetest.Save(t, s, storetest.NewCall(fmt.Sprintf("c%07d", i), "alice", 1_000, "bob", "carol", "dave"))
			i++
		}
	}
	walSize := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	for walSize() < 4<<20 {
		save(100)
	}
	grown := walSize()
	if err := rtx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// Checkpoints catch up, and the WAL restarts from its start.
	deadline := time.Now().Add(30 * time.Second)
	for walSize() > 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the WAL stayed at %d bytes (grown to %d), want at most 1 MiB once it restarted", walSize(), grown)
		}
		save(20)
	}
}

// A first start on a backup made, by the clock, after now says so: the
// gap that keeps its ids above an earlier restore's is sized by the clock.
func TestRestoreOnAClockBehindTheBackupWarns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, out := filepath.Join(dir, "callsig.db"), filepath.Join(dir, "backup.db")
	s := openAt(t, path)
	storetest.Save(t, s, storetest.NewCall("c1", "alice", 1_000, "bob"))
	if _, err := Backup(ctx, path, out, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	b, err := Open(ctx, out, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if !strings.Contains(logs.String(), "behind the backup's time") {
		t.Fatalf("no warning of the clock behind the backup:\n%s", logs.String())
	}
}
