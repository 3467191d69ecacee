//go:build linux

package testkit

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort is the listeners' Control: with SO_REUSEPORT on both, a
// socket of holdPort can be bound to a node's port while the node's
// listener is open, and the next listener while it is held.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}

// holdPort binds a socket to addr, a node's listening address, without
// listening on it: a connection to addr is refused, as by a stopped
// process, but no other socket gets the port (not a test's listener on
// port 0, nor an outgoing connection's local port) until release, after
// the node listens there again.
func holdPort(addr string) (release func(), err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", addr, err)
	}
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if ip := ap.Addr().Unmap(); ip.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", addr, err)
	}
	// SO_REUSEPORT only: with SO_REUSEADDR too, Linux would let any other
	// socket with SO_REUSEADDR (every Go listener) bind the port, as no
	// socket listens on it.
	if err := errors.Join(
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1),
		syscall.Bind(fd, sa)); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("hold %s: %w", addr, err)
	}
	return func() { syscall.Close(fd) }, nil
}
