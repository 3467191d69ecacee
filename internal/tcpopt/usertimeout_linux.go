package tcpopt

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UserTimeout sets TCP_USER_TIMEOUT on c: the kernel closes the connection
// once bytes it sent stay unacknowledged for d.
func UserTimeout(c syscall.RawConn, d time.Duration) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	}); err != nil {
		return err
	}
	return serr
}
