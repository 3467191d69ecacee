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
	open, err := openElsewhere(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("db: check whether %s is open elsewhere: %w", path, err)
	}
	if open {
		f.Close()
		return nil, fmt.Errorf("%w: %s (open in a process that takes no flock: a callsig node of a version before 2026-12-07, a backup being made, or another program)",
			ErrInUse, path)
	}
	return f, nil
}

// lockWait is how long Lock waits for a lock held (see Lock).
const lockWait = 500 * time.Millisecond

// SQLite's unix locking protocol (os_unix.c): in WAL mode (callsig's, in
// every version) a connection holds a read lock on the "shared" byte range
// of the database file for as long as it is open.
const (
	pendingByte = 0x40000000
	sharedFirst = pendingByte + 2
	sharedSize  = 510
)

// openElsewhere reports whether another process has the database file of
// f open in SQLite, flock or not: a node of a version before the flock
// (2359a34) still running when the new one starts, as an upgrade that
// starts the new process before the old has stopped does (a Kubernetes
// rolling update of a Deployment on one volume, say). The new node then
// migrated the schema under it and both served, each with a writer and a
// cache of calls of its own. It asks with F_GETLK on f, which takes no
// lock: locks of this process are not reported (nor are they a forked
// child's: POSIX locks are not inherited), and f stays open (closing a
// descriptor of the file would drop them).
func openElsewhere(f *os.File) (bool, error) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: sharedFirst, Len: sharedSize}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != syscall.F_UNLCK, nil
}
