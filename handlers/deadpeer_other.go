//go:build !linux

package handlers

import (
	"net"
	"time"
)

// forgetDeadPeer does nothing here: TCP_USER_TIMEOUT is Linux's, and a
// peer gone silent is noticed by TCP's own retries (many minutes).
func forgetDeadPeer(net.Conn, time.Duration) {}
