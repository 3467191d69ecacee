//go:build !linux

package tcpopt

import (
	"syscall"
	"time"
)

// UserTimeout does nothing where TCP_USER_TIMEOUT is not available: a
// silent peer is noticed by TCP's own retries (many minutes).
func UserTimeout(syscall.RawConn, time.Duration) error { return nil }
