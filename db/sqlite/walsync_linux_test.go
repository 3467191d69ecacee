//go:build linux

package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC {
		t.Skip("the temporary directory is in memory: its pages are never clean")
	}
	path := filepath.Join(dir, "callsig.db")
	wal := path + "-wal" // SQLite's name for it, not the one the syncer holds
	s := openAt(t, path)
	ctx := context.Background()
	for i := range 20 {
		if err := s.write(ctx, insertEvent(fmt.Sprintf("u%d", i))); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(wal)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Cachestat_t
		err = unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0) // Len 0: to the end
		f.Close()
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP) {
			t.Skipf("cachestat: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if st.Cache == 0 {
			t.Skip("the WAL has no page in the page cache: nothing to tell")
		}
		if st.Dirty != 0 || st.Writeback != 0 {
			t.Fatalf("write %d answered with %d dirty and %d writeback pages of %d in %s's page cache: not fsynced",
				i, st.Dirty, st.Writeback, st.Cache, wal)
		}
	}
}
