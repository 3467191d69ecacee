package handlers

import (
	"net"
	"time"

	"callsig/internal/tcpopt"
)

// forgetDeadPeer sets TCP_USER_TIMEOUT on c where the platform has it: the
// kernel closes a connection whose sent bytes stay unacknowledged for d
// (see deadPeerTimeout). Best effort: a failure leaves TCP's own retries.
func forgetDeadPeer(c net.Conn, d time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	if raw, err := tc.SyscallConn(); err == nil {
		_ = tcpopt.UserTimeout(raw, d)
	}
}
