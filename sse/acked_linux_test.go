package sse

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"callsig/internal/wait"
)

// A page write of an opening stream is cut short by serve (a deadline in
// the past) once the client left. flush counted the whole buffer as
// written, the socket is still open at the stream's end, and checkAcks
// took the bytes never written for acknowledged ones: an invitation still
// in the server's send queue was reported delivered (a review, with the
// kernel's own counts). Only what went out counts now.
func TestWriteCutShortCountsOnlyWhatWentOut(t *testing.T) {
	var lastQ atomic.Int64
	var mu sync.Mutex
	first := true
	// The kernel's count, with a small send buffer, so that the page
	// after the client's last read blocks.
	acks := func(c net.Conn) (int64, bool) {
		srv, ok := unackedBytes(c)
		if !ok {
			return 0, false
		}
		mu.Lock()
		defer mu.Unlock()
		if first {
			first = false
			sc, _ := c.(syscall.Conn)
			raw, _ := sc.SyscallConn()
			_ = raw.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096) })
		}
		lastQ.Store(srv)
		return srv, true
	}
	left := make(chan struct{})
	r := newRig(t, Options{unackedBytes: acks, onDeserted: func() { close(left) }})
	for i := range 2*pageSize + 10 {
		r.hub.Committed(r.log.add(inv("bob", fmt.Sprintf("c%d", i+1))), 0)
	}
	r.log.unreceived["bob"] = []int64{pageSize}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /?user=bob&device=d HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n")
	br := bufio.NewReaderSize(conn, 16)
	stopAt := fmt.Sprintf("id: %d", pageSize-60) // well before c256, at the end of page 1
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(line) == stopAt {
			break
		}
	}
	time.Sleep(500 * time.Millisecond) // the next page's write blocks
	if got := r.svc.list(); slices.Contains(got, fmt.Sprintf("delivered c%d bob", pageSize)) {
		t.Fatalf("already delivered before leaving: %v", got)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("serve never saw the client leave")
	}
	wait.For(t, 5*time.Second, "offline", func() bool { return slices.Contains(r.svc.list(), "offline bob") })
	if got := r.svc.list(); slices.Contains(got, fmt.Sprintf("delivered c%d bob", pageSize)) {
		t.Fatalf("reports %v: c%d, unread and unacknowledged (%d bytes in the server's queue), counted as delivered", got, pageSize, lastQ.Load())
	}
}

// The opener of a stream whose client left ends it, which closes the
// socket, once its work stops at the stream's cancelled context. A store
// that ignores the context held the socket, and its connection's place
// under the cap, for as long as it liked (a review's leftover): the socket
// is now closed after ReadTimeout whatever the opener does.
func TestDesertedStreamIsClosedWhileItsOpenerHangs(t *testing.T) {
	var mu sync.Mutex
	var server net.Conn
	acks := func(c net.Conn) (int64, bool) {
		mu.Lock()
		server = c
		mu.Unlock()
		return unackedBytes(c)
	}
	left := make(chan struct{})
	r := newRig(t, Options{unackedBytes: acks, ReadTimeout: 300 * time.Millisecond, onDeserted: func() { close(left) }})
	for i := range pageSize + 10 {
		r.hub.Committed(r.log.add(inv("bob", fmt.Sprintf("c%d", i+1))), 0)
	}
	r.log.unreceived["bob"] = []int64{1}
	second, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 { // the catch-up's second page hangs, deaf to its context
			close(second)
			<-release
		}
	}
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	<-second
	c.res.Body.Close()
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("serve never saw the client leave")
	}
	wait.For(t, 5*time.Second, "the deserted stream's socket closed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, open := unackedBytes(server)
		return !open
	})
}
