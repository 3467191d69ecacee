package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// event is one Server-Sent Event as read from a stream. data is only valid
// during the callback that receives it.
type event struct {
	id   int64
	typ  string
	data []byte
	at   time.Time // when its terminating blank line was read
}

// streamCounters are shared by all the streams of a run.
type streamCounters struct {
	opens      atomic.Int64 // successful connections, reconnections included
	reconnects atomic.Int64 // successful connections after the first one of a stream
	failures   atomic.Int64 // connections that failed or ended unexpectedly
	events     atomic.Int64
	lastErr    atomic.Pointer[error]
}

func (c *streamCounters) fail(err error) {
	c.failures.Add(1)
	c.lastErr.Store(&err)
}

func (c *streamCounters) err() error {
	if p := c.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// sseStream is one user's GET /events, read on a plain connection (one
// goroutine and two small buffers per stream, so tens of thousands fit).
// With reconnect set it comes back after a drop with Last-Event-ID, as
// EventSource does, so nothing is lost across a server restart. It retries
// every 25 ms at most (not the server's suggested 3 s), so a restart is
// timed by the server's readiness, not by the client's backoff.
type sseStream struct {
	base      *url.URL
	user      string
	device    string
	token     string
	reconnect bool
	onEvent   func(s *sseStream, ev *event)
	counters  *streamCounters
	up        *gate // reconnections wait while it is shut (a restart)

	lastID   int64
	openedAt atomic.Int64 // UnixNano of the first successful open, 0 before
	opened   chan struct{}
	ended    chan struct{} // closed when run returns
}

func newStream(base *url.URL, user, token string, reconnect bool, up *gate, counters *streamCounters, onEvent func(*sseStream, *event)) *sseStream {
	return &sseStream{
		base: base, user: user, device: "loadgen", token: token, reconnect: reconnect, up: up,
		onEvent: onEvent, counters: counters, opened: make(chan struct{}), ended: make(chan struct{}),
	}
}

// run reads the stream until ctx is done (or, without reconnect, until the
// first failure).
func (s *sseStream) run(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		gotData, err := s.once(ctx)
		if ctx.Err() != nil {
			return
		}
		s.counters.fail(fmt.Errorf("stream of %s: %w", s.user, err))
		if !s.reconnect {
			return
		}
		if gotData {
			backoff = 10 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		select {
		case <-ctx.Done():
			return
		case <-s.up.wait():
		}
		backoff = min(backoff*2, 25*time.Millisecond)
	}
}

// once makes one connection and reads it until it ends. gotData reports
// whether it got as far as the response headers.
func (s *sseStream) once(ctx context.Context) (gotData bool, err error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
	}()

	q := url.Values{"access_token": {s.token}, "deviceID": {s.device}}
	req := fmt.Appendf(nil, "GET %s?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
		strings.TrimRight(s.base.EscapedPath(), "/")+"/events", q.Encode(), s.base.Host)
	if s.lastID > 0 {
		req = fmt.Appendf(req, "Last-Event-ID: %d\r\n", s.lastID)
	}
	req = append(req, "\r\n"...)
	if _, err := conn.Write(req); err != nil {
		return false, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return false, fmt.Errorf("GET /events: %d %s", res.StatusCode, bytes.TrimSpace(b))
	}
	s.counters.opens.Add(1)
	if s.openedAt.Load() != 0 {
		s.counters.reconnects.Add(1)
	} else {
		s.openedAt.Store(time.Now().UnixNano())
		close(s.opened)
	}
	return true, s.read(bufio.NewReaderSize(res.Body, 2048))
}

func (s *sseStream) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	host := s.base.Host
	switch s.base.Scheme {
	case "http":
		if s.base.Port() == "" {
			host = net.JoinHostPort(s.base.Hostname(), "80")
		}
		return d.DialContext(ctx, "tcp", host)
	case "https":
		if s.base.Port() == "" {
			host = net.JoinHostPort(s.base.Hostname(), "443")
		}
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{ServerName: s.base.Hostname()}}
		return td.DialContext(ctx, "tcp", host)
	}
	return nil, fmt.Errorf("unsupported URL scheme %q", s.base.Scheme)
}

// read parses the event stream (WHATWG: "field: value" lines, a blank line
// ends a block, lines starting with ':' are comments) and hands each event
// to onEvent.
func (s *sseStream) read(r *bufio.Reader) error {
	var (
		ev      event
		idSeen  bool
		id      int64
		data    []byte
		hasData bool
	)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the server never ends a stream by itself
			}
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if idSeen {
				s.lastID = id
			}
			// synced ends a new stream's opening: no event of the load.
			if hasData && ev.typ != "synced" {
				ev.id, ev.data, ev.at = s.lastID, data, time.Now()
				s.counters.events.Add(1)
				if s.onEvent != nil {
					s.onEvent(s, &ev)
				}
			}
			ev, idSeen, data, hasData = event{}, false, data[:0], false
			continue
		}
		if line[0] == ':' {
			continue // comment (heartbeat)
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			if n, err := strconv.ParseInt(string(value), 10, 64); err == nil {
				id, idSeen = n, true
			}
		case "event":
			ev.typ = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
}

// streamSet is the streams of a run, opened together and closed together.
type streamSet struct {
	list     []*sseStream
	counters *streamCounters
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// openStreams starts one stream per user, at most concurrency connecting
// at once, and waits until each has its response headers (the server has
// subscribed it: nothing committed from then on can be missed). It returns
// how long opening them took. nodeOf says which node users[i]'s stream
// goes to (nil: the first).
func openStreams(ctx context.Context, t *target, users []string, nodeOf func(i int) int, concurrency int, reconnect bool, onEvent func(*sseStream, *event)) (*streamSet, time.Duration, error) {
	set := &streamSet{counters: &streamCounters{}}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	set.cancel = cancel
	began := time.Now()
	sem := make(chan struct{}, max(concurrency, 1))
	fail := func(err error) (*streamSet, time.Duration, error) {
		set.close()
		return nil, 0, err
	}
	for i, u := range users {
		base := t.base
		if nodeOf != nil {
			base = t.nodes[nodeOf(i)].base
		}
		s := newStream(base, u, t.tokens.token(u), reconnect, t.up, set.counters, onEvent)
		set.list = append(set.list, s)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		set.wg.Add(1)
		go func() {
			defer set.wg.Done()
			defer close(s.ended)
			s.run(sctx)
		}()
		// The slot frees when the stream is open, or when it gave up.
		go func() {
			select {
			case <-s.opened:
			case <-s.ended:
			}
			<-sem
		}()
	}
	timeout := time.After(2 * time.Minute)
	for _, s := range set.list {
		select {
		case <-s.opened:
			continue
		case <-s.ended:
			return fail(fmt.Errorf("a stream failed to open: %v", set.counters.err()))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-timeout:
			return fail(fmt.Errorf("stream of %s did not open within 2 minutes (last error: %v)", s.user, set.counters.err()))
		}
	}
	var last int64
	for _, s := range set.list {
		last = max(last, s.openedAt.Load())
	}
	return set, time.Unix(0, last).Sub(began), nil
}

// close ends every stream and waits for their goroutines.
func (set *streamSet) close() {
	set.cancel()
	set.wg.Wait()
}

// gate holds reconnections back while the load generator restarts the
// server, so a storm of refused connections neither burns the shared cores
// nor slows the start being timed; it opens once the server is ready.
type gate struct {
	mu sync.Mutex
	ch chan struct{} // closed while the gate is open
}

func newGate() *gate {
	g := &gate{ch: make(chan struct{})}
	close(g.ch)
	return g
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
		g.ch = make(chan struct{})
	default:
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
	default:
		close(g.ch)
	}
}

func (g *gate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}
