//go:build linux

package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The other syncer tests stand in for the fsync (they wrap syncWAL and
// take its return for "durable"), so none of them sees a syncer that
// calls it and makes nothing durable: an fsync left out of walSyncer.sync,
// or made on another file than the WAL SQLite writes. Here the kernel is
// asked (cachestat(2), Linux 6.5): once a write is answered, no page of
// the -wal file may still be dirty or under writeback, or a power cut
// could take back what was answered. No other write runs meanwhile.
func TestAnsweredWriteLeavesNoDirtyWALPage(t *testing.T) {
	dir := diskDir(t)
	path := filepath.Join(dir, "callsig.db")
	wal := path + "-wal" // SQLite's name for it, not the one the syncer holds
	s := openAt(t, path)
	ctx := context.Background()
	for i := range 20 {
		if err := s.write(ctx, insertEvent(fmt.Sprintf("u%d", i))); err != nil {
			t.Fatal(err)
		}
		if st := pageCache(t, wal); st.Dirty != 0 || st.Writeback != 0 {
			t.Fatalf("write %d answered with %d dirty and %d writeback pages of %d in %s's page cache: not fsynced",
				i, st.Dirty, st.Writeback, st.Cache, wal)
		}
	}
}

// What a killed process left in the WAL may be in the page cache only (it
// was never answered, so never fsynced): Open makes it durable before the
// store reads any of it as durable (its events fed to streams, a stored
// answer replayed). The files are written here without an fsync, as such
// a process leaves them, and must be clean once Open returns.
func TestOpenMakesALeftOverWALDurable(t *testing.T) {
	path := unsyncedCopy(t) // as a SIGKILL leaves it
	openAt(t, path)
	if st := pageCache(t, path+"-wal"); st.Dirty != 0 || st.Writeback != 0 {
		t.Fatalf("Open returned with %d dirty and %d writeback pages of %d of the WAL it found: not fsynced",
			st.Dirty, st.Writeback, st.Cache)
	}
}

// unsyncedCopy returns the path of a database on disk (diskDir) with five
// events in its WAL, written and never fsynced. Should the kernel write
// them out before they are looked at (its writeback runs some 30 s after
// a write, or under memory pressure), the copy is written again.
func unsyncedCopy(t *testing.T) string {
	t.Helper()
	from := filepath.Join(t.TempDir(), "callsig.db")
	s := openAt(t, from)
	ctx := context.Background()
	noCheckpoints(t, s)
	for i := range 5 {
		if err := s.write(ctx, insertEvent(fmt.Sprintf("u%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(diskDir(t), "callsig.db")
	for range 5 {
		for _, suffix := range []string{"", "-wal"} {
			if err := os.WriteFile(path+suffix, readFile(t, from+suffix), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if pageCache(t, path+"-wal").Dirty > 0 {
			return path
		}
	}
	t.Fatal("the copied WAL was written out by the kernel five times in a row before it could be looked at")
	return ""
}

// diskDir is a temporary directory on disk: where the test's temporary
// directory is in memory (tmpfs: its pages are never clean, fsync or
// not), one made in the package's directory, which is the checkout's.
func diskDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if !inMemory(t, dir) {
		return dir
	}
	dir, err := os.MkdirTemp(".", "walsync-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if inMemory(t, dir) {
		t.Skip("both the temporary directory and the checkout are in memory (tmpfs): no page there is ever clean, so fsync cannot be told")
	}
	return dir
}

func inMemory(t *testing.T, dir string) bool {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	return fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC
}

// pageCache is what the page cache holds of the file at path
// (cachestat(2)). Pages evicted count as neither dirty nor under
// writeback: the kernel evicts only clean ones.
func pageCache(t *testing.T, path string) unix.Cachestat_t {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Cachestat_t
	err = unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0) // Len 0: to the end
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("cachestat(2) is not available (Linux before 6.5, or a sandbox that blocks it: %v): the kernel cannot tell whether a page was fsynced", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A backup may copy commits its node has not fsynced yet; it fsyncs the
// node's WAL once the copy is made, so that a power cut of the node then
// cannot lose ids the backup holds (and have the node give them again).
func TestBackupMakesTheNodesWALDurable(t *testing.T) {
	path := unsyncedCopy(t) // as a node's commits before its syncer's turn
	if _, err := Backup(context.Background(), path, filepath.Join(filepath.Dir(path), "backup.db"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if st := pageCache(t, path+"-wal"); st.Dirty != 0 || st.Writeback != 0 {
		t.Fatalf("Backup returned with %d dirty and %d writeback pages of %d of the node's WAL: not fsynced",
			st.Dirty, st.Writeback, st.Cache)
	}
}
