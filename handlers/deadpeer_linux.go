package handlers

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// forgetDeadPeer sets TCP_USER_TIMEOUT on c: the kernel closes a
// connection whose sent bytes stay unacknowledged for d (see
// deadPeerTimeout). Best effort: a failure leaves TCP's own retries.
func forgetDeadPeer(c net.Conn, d time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
