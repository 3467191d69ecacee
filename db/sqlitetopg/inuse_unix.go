//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package sqlitetopg

import (
	"io"
	"os"
	"syscall"
)

// SQLite's unix locking protocol (os_unix.c): a connection holds a read
// lock on the "shared" byte range for as long as it reads, and in WAL
// mode (callsig's) for as long as the connection is open.
const (
	pendingByte = 0x40000000
	sharedFirst = pendingByte + 2
	sharedSize  = 510
)

// inUse reports whether another process holds a SQLite lock on the file,
// i.e. has it open (a running node). It asks with F_GETLK, which takes no
// lock. POSIX locks of this process are not reported, and closing the
// descriptor drops them, so it runs before this process opens the file.
func inUse(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: sharedFirst, Len: sharedSize}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false, err
	}
	return lk.Type != syscall.F_UNLCK, nil
}
