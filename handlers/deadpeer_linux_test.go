package handlers

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Every connection the server accepts is closed by the kernel once its
// sent bytes stay unacknowledged for deadPeerTimeout: a client whose
// network went away without a FIN (a phone leaving Wi-Fi) must stop
// counting as online (see deadPeerTimeout).
func TestAcceptedConnectionsForgetADeadPeer(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewConnLimit(10, 1).Listener(inner)
	defer ln.Close()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// Through the wrappers an event stream holds once it hijacked the
	// connection, as the stream reads its unacknowledged bytes: were the
	// chain broken, that would quietly count each write as acknowledged.
	var held net.Conn = &countingConn{Conn: sc, closed: func(int64) {}}
	sys, ok := held.(syscall.Conn)
	if !ok {
		t.Fatal("a hijacked connection does not reach its socket (syscall.Conn)")
	}
	raw, err := sys.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ms int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		ms, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if want := int(deadPeerTimeout.Milliseconds()); ms != want {
		t.Fatalf("TCP_USER_TIMEOUT = %d ms, want %d", ms, want)
	}
}
