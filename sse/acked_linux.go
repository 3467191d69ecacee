package sse

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unackedBytes returns how many of the bytes written on c its peer has not
// acknowledged yet (SIOCOUTQ: those not sent and those sent but not
// acknowledged); ok is false when c cannot tell.
func unackedBytes(c net.Conn) (n int64, ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var q int
	var qerr error
	if err := raw.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || qerr != nil {
		return 0, false
	}
	return int64(q), true
}
