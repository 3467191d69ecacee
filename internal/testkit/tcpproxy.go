package testkit

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// TCPProxy forwards a local port to a backend address until the test cuts
// it: the tests of an unreachable PostgreSQL put one between the nodes and
// the server. Cut closes every forwarded connection and makes new ones
// fail at once (accepted and closed), as a dropped network path or a
// restarting server looks to a client; Restore forwards again. Freeze
// makes the path silent instead, as a dead host or a partition looks: the
// connections stay open and bytes are neither delivered nor refused
// until Thaw. Turns counts round trips: the tests of PostgreSQL's
// pipelines count them.
type TCPProxy struct {
	Addr    string // where clients connect
	backend string
	ln      net.Listener

	mu     sync.Mutex
	cut    bool
	frozen chan struct{} // while frozen: closed by Thaw
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup

	turns atomic.Int64
}

// Turns returns how many times, over all connections, the client began
// to send after the server had answered (or for the first time): the
// round trips, however the bytes of each were split.
func (p *TCPProxy) Turns() int64 { return p.turns.Load() }

// StartTCPProxy listens on a free loopback port and forwards to backend
// until t ends.
func StartTCPProxy(t testing.TB, backend string) *TCPProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &TCPProxy{Addr: ln.Addr().String(), backend: backend, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *TCPProxy) forward(c net.Conn) {
	defer p.wg.Done()
	defer p.drop(c)
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	if !p.track(b) {
		b.Close()
		return
	}
	defer p.drop(b)
	var answered atomic.Bool // the last bytes went from the server to the client
	answered.Store(true)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(b, watched{c, func() {
			p.gate()
			if answered.Swap(false) {
				p.turns.Add(1)
			}
		}})
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(c, watched{b, func() { p.gate(); answered.Store(true) }})
		done <- struct{}{}
	}()
	<-done // either side ending ends both
}

// watched is a reader that calls read before it hands on bytes it read.
type watched struct {
	r    io.Reader
	read func()
}

func (w watched) Read(b []byte) (int, error) {
	n, err := w.r.Read(b)
	if n > 0 {
		w.read()
	}
	return n, err
}

// track registers a backend connection unless the proxy was cut meanwhile.
func (p *TCPProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *TCPProxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Cut closes every forwarded connection and refuses new ones.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Freeze holds every byte read from either side, of the connections open
// and of new ones, until Thaw: nothing is refused or reset.
func (p *TCPProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// Thaw delivers what Freeze held, and forwards again.
func (p *TCPProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// gate waits while the proxy is frozen.
func (p *TCPProxy) gate() {
	p.mu.Lock()
	ch := p.frozen
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// Restore forwards new connections again.
func (p *TCPProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *TCPProxy) close() {
	p.Thaw()
	p.Cut()
	p.ln.Close()
	p.wg.Wait()
}
