package postgres

import (
	"strings"
	"syscall"
	"time"

	"callsig/internal/tcpopt"
)

// userTimeout sets TCP_USER_TIMEOUT on TCP sockets: a connection whose
// sent bytes stay unacknowledged for d is closed (see dialer). Where the
// platform lacks it, the keepalive probes and the write transactions'
// bound remain.
func userTimeout(d time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		if !strings.HasPrefix(network, "tcp") {
			return nil // a Unix socket has no path to go silent
		}
		return tcpopt.UserTimeout(c, d)
	}
}
