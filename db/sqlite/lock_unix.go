//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
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
//
// A lock held is tried again for lockWait before the file counts as in
// use: a child process being started (fork, then exec) holds a copy of
// every descriptor until its exec closes them, the lock's included, so a
// store closed and opened again in one process (a restart in tests, with
// other tests starting processes) could find its own released lock still
// held for that moment.
func Lock(path string) (io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("db: open %s to lock it: %w", path, err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, path)
		}
		return nil, fmt.Errorf("db: lock %s: %w", path, err)
	}
	return f, nil
}

// lockWait is how long Lock waits for a lock held (see Lock).
const lockWait = 500 * time.Millisecond
