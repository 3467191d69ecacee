package handlers

import (
	"errors"
	"net"
	"testing"
	"time"
)

// Past max+reserve a connection is closed as soon as it is accepted: the
// client learns at once, nothing waits in the backlog; closing a served
// connection frees its slot.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewConnLimit(1, 1).Listener(inner)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	take := func() *limitedConn {
		select {
		case c := <-accepted:
			return c.(*limitedConn)
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}
	dial()
	if first := take(); first.overflow {
		t.Fatal("first connection marked overflow")
	}
	dial()
	second := take()
	if !second.overflow {
		t.Fatal("second connection (the reserve) not marked overflow")
	}
	third := dial() // past max+reserve
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ne net.Error
	if _, err := third.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("connection past the reserve: read err = %v, want it closed at once", err)
	}
	second.Close()
	dial()
	if again := take(); !again.overflow {
		t.Fatal("slot freed by Close not reused for the reserve")
	}
	select {
	case c := <-accepted:
		t.Fatalf("unexpected accepted connection %v", c.RemoteAddr())
	default:
	}
}

// Every read deadline set on a reserve connection is clamped to its
// cutoff, the one net/http clears once the headers are in included, so a
// client that sends headers and then stalls is cut off too; a connection
// under the cap keeps the deadlines it is given.
func TestOverflowReadDeadlineClamped(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewConnLimit(1, 1)
	l.overflowWait = 100 * time.Millisecond
	ln := l.Listener(inner)
	defer ln.Close()
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	normal, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer normal.Close()
	over, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if !over.(*limitedConn).overflow || normal.(*limitedConn).overflow {
		t.Fatal("second connection not the overflow one")
	}
	for _, set := range []func(time.Time) error{over.SetReadDeadline, over.SetDeadline} {
		if err := set(time.Time{}); err != nil { // "no deadline", as net/http sets after the headers
			t.Fatal(err)
		}
		start := time.Now()
		var ne net.Error
		if _, err := over.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read on a silent overflow connection = %v, want a timeout at the cutoff", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("overflow read ended after %v, long past the cutoff", d)
		}
	}
	if got := normal.(*limitedConn).clamp(time.Time{}); !got.IsZero() {
		t.Fatalf("a connection under the cap had its deadline clamped to %v", got)
	}
}
