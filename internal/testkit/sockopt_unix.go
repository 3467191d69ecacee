//go:build unix

package testkit

import (
	"errors"
	"net"
	"syscall"
)

// tinyReceiveBuffer is a net.Dialer's Control giving the socket a tiny
// receive buffer and, as the server sizes its send buffer from the segment
// size (64 KiB on loopback: megabytes of buffer), a small MSS too.
func tinyReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = errors.Join(
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024),
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536))
	})
	return errors.Join(err, serr)
}

// DialNotReading connects to addr with a tiny receive window, for a client
// that sends requests and reads none of the answers: the server's writes
// block after some tens of KiB (see StuckStream).
func DialNotReading(addr string) (net.Conn, error) {
	d := net.Dialer{Control: tinyReceiveBuffer}
	return d.Dial("tcp", addr)
}
