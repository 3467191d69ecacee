package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A client that asks for answers and reads none must not hold a graceful
// stop to its timeout and make it fail (exit 1): the answers still being
// written are cut a little before the requests' end (App.CutAnswersAt). A
// review stopped a server so: 15.5 s, the whole timeout, then an error.
func TestUnreadAnswerDoesNotHoldTheStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "callsig.db"), "-shutdown-timeout", "3s"}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, secretEnv, logs) }()
	addr := listening(t, logs)

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) }); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Far more than the socket buffers hold: the server's write blocks.
	var reqs strings.Builder
	for range 100 {
		fmt.Fprintf(&reqs, "GET /openapi.yaml HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
	}
	if _, err := conn.Write([]byte(reqs.String())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the buffers fill within milliseconds
	start := time.Now()
	cancel()
	if err := served(t, done, 3*time.Second+5*time.Second, logs); err != nil {
		t.Fatalf("a client reading nothing failed the stop after %v: %v\n%s", time.Since(start), err, logs)
	}
}
