//go:build !linux

package postgres

import (
	"syscall"
	"time"
)

// userTimeout does nothing where TCP_USER_TIMEOUT is not available: the
// keepalive probes and the write transactions' bound remain (see dialer).
func userTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
