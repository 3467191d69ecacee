package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// freezingProxy forwards TCP connections to target until freeze, after
// which it forwards nothing more and holds every connection open, old and
// new: a database that stopped answering (a failover, a partition) without
// closing anything.
type freezingProxy struct {
	ln     net.Listener
	target string
	frozen chan struct{}
	once   sync.Once
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezingProxy{ln: ln, target: target, frozen: make(chan struct{})}
	t.Cleanup(func() {
		p.freeze()
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go p.serve()
	return p
}

func (p *freezingProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

func (p *freezingProxy) keep(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *freezingProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.keep(c)
		select {
		case <-p.frozen:
			continue // held open, never answered
		default:
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.keep(up)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst until the proxy freezes; what is read after
// that is dropped, and the connections stay open.
func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			<-make(chan struct{}) // held until the test closes the connections
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// The shutdown's steps (the requests in flight, the background parts,
// the database close) each waited the whole CALLSIG_SHUTDOWN_TIMEOUT, one
// after the other: an operator who set 10 s for a 15 s termination grace
// period got up to 30 s, and a SIGKILL midway. Here every step is stuck:
// a request whose body never ends, a webhook attempt to a receiver that
// hangs (whose release, at the stop, is a write), an event stream open,
// and PostgreSQL silent since the signal. The whole shutdown must end
// within the timeout (and a little scheduling slack), exit status 1.
func TestShutdownIsBoundedAsAWhole(t *testing.T) {
	const timeout = 2 * time.Second
	entered := make(chan struct{}, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		entered <- struct{}{}
		<-r.Context().Done()
	}))
	defer receiver.Close()

	dsn := pgtest.NewDatabase(t)
	proxy := newFreezingProxy(t, "127.0.0.1:5432")
	dsn = strings.Replace(dsn, "127.0.0.1:5432", proxy.ln.Addr().String(), 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", dsn, "-shutdown-timeout", timeout.String(),
		"-webhook-url", receiver.URL, "-webhook-secret", webhooks.NewSecret(), "-webhook-allow-private"}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, secretEnv, logs) }()
	addr := listening(t, logs)
	tok, err := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// An event stream, open through the shutdown.
	streamReq, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/events", nil)
	streamReq.Header.Set("Authorization", "Bearer "+tok)
	stream, err := http.DefaultClient.Do(streamReq)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	var streamEnded atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, stream.Body)
		streamEnded.Store(true)
	}()

	// A call: its webhook attempt hangs at the receiver.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/calls", strings.NewReader(`{"invitees":["bob"]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated && res.StatusCode != http.StatusOK {
		t.Fatalf("POST /calls: %s", res.Status)
	}
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatalf("no webhook attempt reached the receiver\n%s", logs)
	}

	// A request in flight whose body never ends.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /calls HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", addr, tok)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if status, _ := bufio.NewReader(conn).ReadString('\n'); !strings.Contains(status, "100 Continue") {
		t.Fatalf("the slow request: %q", status)
	}
	fmt.Fprint(conn, "{")

	proxy.freeze()
	start := time.Now()
	cancel()
	var stopErr error
	select {
	case stopErr = <-done:
	case <-time.After(10 * timeout):
		t.Fatalf("serve did not return\n%s", logs)
	}
	took := time.Since(start)
	t.Logf("shutdown took %v (timeout %v): %v", took, timeout, stopErr)
	if stopErr == nil {
		t.Errorf("serve returned nil after steps were cut short, want an error (exit status 1)")
	}
	if limit := timeout + time.Second; took > limit {
		t.Fatalf("the shutdown took %v, more than its timeout %v (and a second's slack)\n%s", took, timeout, logs)
	}
	if !wait.Until(5*time.Second, streamEnded.Load) {
		t.Errorf("the event stream stayed open after the shutdown")
	}
}
