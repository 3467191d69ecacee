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
