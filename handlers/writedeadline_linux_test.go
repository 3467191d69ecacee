package handlers

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A client that asks for answers and never reads them must lose its
// connection once the answer timeout passes: without a write deadline the
// handler blocked in its write for as long as the client stayed, holding
// the answer, the connection and a goroutine (a review held 2.3 GB so, and
// every shutdown waited for them).
func TestAnswerNeverReadEndsTheConnection(t *testing.T) {
	h := newTestHandler(t, func(d *Deps) { d.AnswerTimeout = 500 * time.Millisecond })
	srv := httptest.NewUnstartedServer(h)
	closed := make(chan struct{})
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			close(closed)
		}
	}
	srv.Start()
	defer srv.Close()

	// A small receive window, and far more answer than the socket buffers
	// on both sides hold: GET /openapi.yaml, pipelined.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var reqs strings.Builder
	for range 100 {
		fmt.Fprintf(&reqs, "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	if _, err := conn.Write([]byte(reqs.String())); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the server still holds a connection whose client has read nothing for 10 s")
	}
}
