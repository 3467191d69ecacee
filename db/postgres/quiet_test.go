package postgres

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// quietPair returns a quietConn over one end of a synchronous pipe (a
// write returns only once the peer has read it) and the peer's end.
func quietPair(t *testing.T, quiet time.Duration) (*quietConn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c, err := dialQuiet(func(context.Context, string, string) (net.Conn, error) { return a, nil }, quiet)(context.Background(), "tcp", "x")
	if err != nil {
		t.Fatal(err)
	}
	return c.(*quietConn), b
}

// The wait for an answer runs from the end of the request: a server that
// took longer than the bound to read a large request, then answered at
// once, was busy, not silent. And a server silent for the bound after the
// request fails the read.
func TestQuietConnCountsSilenceFromTheRequestsEnd(t *testing.T) {
	const quiet = 150 * time.Millisecond
	c, server := quietPair(t, quiet)
	go func() {
		time.Sleep(2 * quiet) // reads the request late...
		buf := make([]byte, 5)
		if _, err := io.ReadFull(server, buf); err != nil {
			return
		}
		_, _ = server.Write([]byte("answer")) // ...and answers at once
	}()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("the answer that came at once after a slow read of the request: %v", err)
	}

	go func() {
		buf := make([]byte, 5)
		_, _ = io.ReadFull(server, buf) // reads the request, never answers
	}()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Read(buf)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read from a silent server: %v, want a timeout", err)
	}
	if waited := time.Since(start); waited < quiet/2 || waited > 20*quiet {
		t.Fatalf("the silent server was given up after %v, want about %v", waited, quiet)
	}
}
