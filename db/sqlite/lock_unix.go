//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Lock takes the database file at path for this process (Open holds it
// while the store is open; callsig migrate while it copies) and returns
// what releases it. A second process finds it taken (ErrInUse): two
// servers on one file each kept a writer and a cache of calls of their
// own, and a reject answered by one was overwritten by an accept the
// other served from its cache (found by review). An flock, which on Linux
// never meets the POSIX locks SQLite takes on the same file; the kernel
// drops it when the process dies, so a crashed node's file opens again at
// once.
//
// The descriptor stays open until the store is closed: closing a
// descriptor of the file drops every POSIX lock the process holds on it,
// SQLite's own included.
func Lock(path string) (io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("db: open %s to lock it: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, path)
		}
		return nil, fmt.Errorf("db: lock %s: %w", path, err)
	}
	return f, nil
}
