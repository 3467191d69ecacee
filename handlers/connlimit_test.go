package handlers

import (
	"errors"
	"net"
	"net/netip"
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
	accepted := acceptAll(ln, 4)
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

// fakeRemote hands out accepted connections as if they came from the
// addresses queued in from, in order: the per-address cap exempts
// loopback, and tests reach the server over loopback only.
type fakeRemote struct {
	net.Listener
	from chan string
}

func (f fakeRemote) Accept() (net.Conn, error) {
	c, err := f.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{Conn: c, remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(<-f.from))}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// One address holds at most its share of the cap: past it, its next
// connection is closed at accept, while other addresses, the same
// address once a connection closes, and loopback or private addresses
// (a proxy's) are still served. IPv6 counts by /64.
func TestPerAddressShare(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewConnLimit(20, 1)
	l.SetPerAddress(2)
	from := make(chan string, 1)
	ln := l.Listener(fakeRemote{Listener: inner, from: from})
	defer ln.Close()
	accepted := acceptAll(ln, 1)
	// connect dials as remote and returns the server's side of the
	// connection, or nil when the server refused it for its address: the
	// refusal count goes up (the positive marker), and the client reads
	// the connection's end, not a timeout.
	connect := func(remote string) net.Conn {
		t.Helper()
		refused := l.perAddr.refused.Load()
		from <- remote
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		deadline := time.After(5 * time.Second)
		for {
			select {
			case sc := <-accepted:
				t.Cleanup(func() { sc.Close() })
				return sc
			case <-deadline:
				t.Fatalf("%s: neither accepted nor refused", remote)
			case <-time.After(time.Millisecond):
			}
			if l.perAddr.refused.Load() > refused {
				break
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: refused, but the client's read = %v, want the connection closed", remote, err)
		}
		return nil
	}
	for _, step := range []struct {
		remote string
		served bool
	}{
		{"203.0.113.5:1000", true},
		{"203.0.113.5:1001", true},
		{"203.0.113.5:1002", false},          // its share is full
		{"[::ffff:203.0.113.5]:1003", false}, // the same address, mapped
		{"198.51.100.7:1000", true},
		{"10.0.0.1:1000", true}, {"10.0.0.1:1001", true}, {"10.0.0.1:1002", true}, // a proxy's
		{"[2001:db8:1:2::1]:1000", true},
		{"[2001:db8:1:2::2]:1000", true},
		{"[2001:db8:1:2::3]:1000", false}, // the same /64
		{"[2001:db8:1:3::1]:1000", true},
	} {
		if got := connect(step.remote) != nil; got != step.served {
			t.Fatalf("%s: served = %v, want %v", step.remote, got, step.served)
		}
	}
	if got := l.perAddr.refused.Load(); got != 3 {
		t.Fatalf("refused per address = %d, want 3", got)
	}
	if got := l.open.Load(); got != 9 {
		t.Fatalf("connections open = %d, want 9 (the refused ones hold nothing)", got)
	}
	first := connect("203.0.113.9:1000")
	connect("203.0.113.9:1001")
	first.Close()
	if connect("203.0.113.9:1002") == nil {
		t.Fatal("a closed connection did not give its address's slot back")
	}
}

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct {
		remote string
		key    string // "": not capped
	}{
		{"203.0.113.5:80", "203.0.113.5/32"},
		{"[::ffff:203.0.113.5]:80", "203.0.113.5/32"},
		{"[2001:db8:1:2:3:4:5:6]:80", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:80", ""},
		{"127.0.0.1:80", ""},
		{"[::1]:80", ""},
		{"192.168.1.2:80", ""},
		{"172.16.0.1:80", ""},
		{"[fd00::1]:80", ""},
		{"0.0.0.0:80", ""},
		{"not an address", ""},
	} {
		var remote net.Addr = &net.UnixAddr{Name: tc.remote, Net: "unix"}
		if ap, err := netip.ParseAddrPort(tc.remote); err == nil {
			remote = net.TCPAddrFromAddrPort(ap)
		}
		key, capped := addrKey(remote)
		if got := map[bool]string{true: key.String(), false: ""}[capped]; got != tc.key {
			t.Errorf("addrKey(%s) = %q, want %q", tc.remote, got, tc.key)
		}
	}
}

// acceptAll accepts ln's connections into the channel it returns (of
// buffer n), closed once ln is.
func acceptAll(ln net.Listener, n int) <-chan net.Conn {
	accepted := make(chan net.Conn, n)
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
	return accepted
}
