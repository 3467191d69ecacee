package testkit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Event is one event dispatched by an SSE stream, as an EventSource would
// see it (WHATWG HTML, "Server-sent events").
type Event struct {
	// LastEventID is the stream's last event ID string when the event was
	// dispatched: the id: of this event or, without one, of an earlier one.
	LastEventID string
	Type        string    // "message" when the block had no event: field
	Data        string    // data: lines joined with "\n"
	At          time.Time // when the client parsed it
}

// ID returns LastEventID as a number (-1 when it is not one).
func (e Event) ID() int64 {
	n, err := strconv.ParseInt(e.LastEventID, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// Fields decodes Data as a JSON object (nil when it is not one).
func (e Event) Fields() map[string]any {
	var m map[string]any
	if json.Unmarshal([]byte(e.Data), &m) != nil {
		return nil
	}
	return m
}

// CallID is the callID field of the data.
func (e Event) CallID() string { s, _ := e.Fields()["callID"].(string); return s }

// Users is the data's callUserList as userID → state.
func (e Event) Users() map[string]string {
	list, _ := e.Fields()["callUserList"].([]any)
	out := map[string]string{}
	for _, u := range list {
		m, _ := u.(map[string]any)
		id, _ := m["userID"].(string)
		st, _ := m["state"].(string)
		out[id] = st
	}
	return out
}

func (e Event) String() string {
	return fmt.Sprintf("[%s %s %s]", e.LastEventID, e.Type, e.Data)
}

// StreamOptions open a stream in ways Server.Stream does not.
type StreamOptions struct {
	User   string
	Device string // ?deviceID= ("" leaves it out: the default device)
	// LastEventID is sent as the Last-Event-ID header ("" = none).
	LastEventID string
	// Query holds extra query parameters (lastEventID, access_token…).
	Query url.Values
	// NoAuthHeader leaves out the Authorization header (for ?access_token=).
	NoAuthHeader bool
	// Header is added to the request (e.g. Origin).
	Header http.Header
	// Node, when set, opens the stream on that node of a cluster (see
	// Server.Nodes) instead of through the balancer.
	Node *int
}

// StreamOn opens a stream of user on node i of a cluster.
func (s *Server) StreamOn(i int, user, lastEventID string) *Stream {
	s.T.Helper()
	return s.OpenStream(StreamOptions{User: user, LastEventID: lastEventID, Node: &i})
}

// Stream is a client reading GET /events byte by byte, parsed exactly as
// the WHATWG event-stream grammar says: UTF-8 with an optional BOM; lines
// ended by CRLF, LF or CR; comments; id, event, data and retry fields;
// multi-line data; a block dispatched at a blank line; an unterminated
// block at the end discarded.
type Stream struct {
	t      testing.TB
	User   string
	Device string
	Header http.Header // the response headers

	body   io.ReadCloser
	cancel context.CancelFunc
	done   chan struct{} // closed when the reader has stopped

	mu       sync.Mutex
	queue    []Event
	arrived  chan struct{} // buffered(1): "queue changed"
	lastID   string        // the EventSource's last event ID string
	retry    int           // the last valid retry: value, -1 if none
	comments int
	synced   int // synced events read (see Synced)
	readErr  error
}

// streamTransport is shared by the test streams: no keep-alive, so closing
// a stream closes its connection as a browser tab going away does.
var streamTransport = &http.Transport{
	Proxy:               nil,
	DisableKeepAlives:   true,
	MaxIdleConnsPerHost: -1,
	DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
}

// Stream opens GET /events as user from device ("" = default) with
// Last-Event-ID lastEventID ("" = a new stream) and returns once the
// response headers arrived (by then the server has subscribed it).
func (s *Server) Stream(user, device, lastEventID string) *Stream {
	s.T.Helper()
	return s.OpenStream(StreamOptions{User: user, Device: device, LastEventID: lastEventID})
}

// OpenStream opens a stream with o; it fails the test unless the answer is
// 200 text/event-stream.
func (s *Server) OpenStream(o StreamOptions) *Stream {
	s.T.Helper()
	st, err := s.TryStream(o)
	if err != nil {
		s.T.Fatal(err)
	}
	return st
}

// TryStream is OpenStream returning its error, for use off the test's
// goroutine (the stream is still closed with the test).
func (s *Server) TryStream(o StreamOptions) (*Stream, error) {
	st, res, err := s.dialStream(o)
	if err != nil {
		return nil, fmt.Errorf("open stream of %s: %w", o.User, err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		st.Close()
		return nil, fmt.Errorf("open stream of %s: %d %s %s", o.User, res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	return st, nil
}

// StreamResponse sends GET /events with o and returns the answer of a
// refusal with its body read into memory (a 200 stream is closed at once).
func (s *Server) StreamResponse(o StreamOptions) *http.Response {
	s.T.Helper()
	st, res, err := s.dialStream(o)
	if err != nil {
		s.T.Fatalf("GET /events: %v", err)
	}
	if res.StatusCode == http.StatusOK {
		st.Close()
		return res
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	st.Close()
	if err != nil {
		s.T.Fatalf("GET /events: read body: %v", err)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res
}

func (s *Server) dialStream(o StreamOptions) (*Stream, *http.Response, error) {
	base := s.URL
	if o.Node != nil {
		base = s.Nodes()[*o.Node]
	}
	tok := ""
	if !o.NoAuthHeader {
		tok = s.Token(o.User)
	}
	return dialStream(s.T, base, tok, o)
}

// DialStream opens GET /events on the server at base (a process the test
// started itself, say) with token, and returns the stream once the
// response headers arrived; it fails unless the answer is a 200 stream.
// The stream is closed when t ends.
func DialStream(t testing.TB, base, token string, o StreamOptions) (*Stream, error) {
	st, res, err := dialStream(t, base, token, o)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		st.Close()
		return nil, fmt.Errorf("open stream of %s: %d", o.User, res.StatusCode)
	}
	return st, nil
}

func dialStream(t testing.TB, base, token string, o StreamOptions) (*Stream, *http.Response, error) {
	q := url.Values{}
	for k, v := range o.Query {
		q[k] = v
	}
	if o.Device != "" {
		q.Set("deviceID", o.Device)
	}
	u := base + "/events"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, v := range o.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if o.LastEventID != "" {
		req.Header.Set("Last-Event-ID", o.LastEventID)
	}
	res, err := streamTransport.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	st := &Stream{
		t: t, User: o.User, Device: o.Device, Header: res.Header,
		body: res.Body, cancel: cancel, done: make(chan struct{}),
		arrived: make(chan struct{}, 1), retry: -1,
	}
	if res.StatusCode == http.StatusOK {
		go st.read()
	} else {
		close(st.done)
	}
	t.Cleanup(st.Close)
	return st, res, nil
}

// Close ends the stream from the client side and waits for its reader.
func (st *Stream) Close() {
	st.cancel()
	st.body.Close()
	<-st.done
}

// Ended reports whether the server ended the stream (or it failed).
func (st *Stream) Ended() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// WaitEnded fails unless the server ends the stream within timeout.
func (st *Stream) WaitEnded(timeout time.Duration) {
	st.t.Helper()
	select {
	case <-st.done:
	case <-time.After(timeout):
		st.t.Fatalf("stream of %s/%s still open after %v", st.User, st.Device, timeout)
	}
}

// LastEventID is the id an EventSource would send when reconnecting.
func (st *Stream) LastEventID() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.lastID
}

// Retry is the last retry: value (-1 when none came).
func (st *Stream) Retry() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.retry
}

// Synced counts the synced events read so far (one per opening of a new
// stream).
func (st *Stream) Synced() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.synced
}

// Comments counts the comment lines read so far.
func (st *Stream) Comments() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.comments
}

// Next returns the next event, failing the test if none comes in timeout.
func (st *Stream) Next(timeout time.Duration) Event {
	st.t.Helper()
	e, ok := st.next(timeout)
	if !ok {
		st.t.Fatalf("stream of %s/%s: no event within %v (%v)", st.User, st.Device, timeout, st.err())
	}
	return e
}

// WaitFor skips events until one of type typ for which pred (nil: any)
// holds, failing the test if none comes in timeout.
func (st *Stream) WaitFor(typ string, pred func(Event) bool, timeout time.Duration) Event {
	st.t.Helper()
	deadline := time.Now().Add(timeout)
	var skipped []Event
	for {
		e, ok := st.next(time.Until(deadline))
		if !ok {
			st.t.Fatalf("stream of %s/%s: no %s within %v; skipped %v (%v)", st.User, st.Device, typ, timeout, skipped, st.err())
		}
		if e.Type == typ && (pred == nil || pred(e)) {
			return e
		}
		skipped = append(skipped, e)
	}
}

// NoEvent fails the test if an event arrives within window.
func (st *Stream) NoEvent(window time.Duration) {
	st.t.Helper()
	if e, ok := st.next(window); ok {
		st.t.Fatalf("stream of %s/%s: unexpected event %v", st.User, st.Device, e)
	}
}

// Pending returns the events received and not yet taken, without waiting.
func (st *Stream) Pending() []Event {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := st.queue
	st.queue = nil
	return out
}

// TryNext returns the next event, or false when none came in timeout
// (the stream may have ended: see Ended); safe off the test's goroutine.
func (st *Stream) TryNext(timeout time.Duration) (Event, bool) { return st.next(timeout) }

func (st *Stream) next(timeout time.Duration) (Event, bool) {
	timer := time.NewTimer(max(timeout, 0))
	defer timer.Stop()
	for {
		st.mu.Lock()
		if len(st.queue) > 0 {
			e := st.queue[0]
			st.queue = st.queue[1:]
			st.mu.Unlock()
			return e, true
		}
		st.mu.Unlock()
		select {
		case <-st.arrived:
		case <-st.done:
			st.mu.Lock()
			n := len(st.queue)
			st.mu.Unlock()
			if n == 0 {
				return Event{}, false
			}
		case <-timer.C:
			return Event{}, false
		}
	}
}

func (st *Stream) err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.readErr == nil && !st.Ended() {
		return errors.New("stream open")
	}
	return st.readErr
}

// read parses the body until it ends.
func (st *Stream) read() {
	defer close(st.done)
	p := &eventParser{dispatch: st.dispatched, comment: st.commented, retry: st.retried}
	err := p.parse(bufio.NewReader(st.body))
	st.mu.Lock()
	st.readErr = err
	st.mu.Unlock()
}

func (st *Stream) dispatched(e Event, lastID string) {
	st.mu.Lock()
	st.lastID = lastID
	switch e.Type {
	case "":
	case "synced":
		// Ends a new stream's opening; an app listening for the call
		// events does not see it either.
		st.synced++
	default:
		st.queue = append(st.queue, e)
	}
	st.mu.Unlock()
	select {
	case st.arrived <- struct{}{}:
	default:
	}
}

func (st *Stream) commented() { st.mu.Lock(); st.comments++; st.mu.Unlock() }

func (st *Stream) retried(ms int) { st.mu.Lock(); st.retry = ms; st.mu.Unlock() }

// eventParser is the WHATWG event-stream interpretation, callback style.
type eventParser struct {
	// dispatch is called at every blank line with the stream's new last
	// event ID; e.Type is "" when the block had no data (nothing dispatched
	// to the page, but the last event ID is still updated).
	dispatch func(e Event, lastID string)
	comment  func()
	retry    func(ms int)

	data, typ, idBuf strings.Builder
	hasData          bool
}

// parse reads lines until EOF or an error; the incomplete block is dropped.
func (p *eventParser) parse(r *bufio.Reader) error {
	first := true
	var line []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch c {
		case '\r':
			// CRLF is one line end: swallow the LF that may follow.
			if n, err := r.Peek(1); err == nil && n[0] == '\n' {
				_, _ = r.ReadByte()
			}
			fallthrough
		case '\n':
			s := strings.ToValidUTF8(string(line), "\uFFFD")
			if first {
				s = strings.TrimPrefix(s, "\uFEFF")
				first = false
			}
			p.line(s)
			line = line[:0]
		default:
			line = append(line, c)
		}
	}
}

func (p *eventParser) line(s string) {
	if s == "" {
		p.fire()
		return
	}
	if s[0] == ':' {
		p.comment()
		return
	}
	field, value, found := strings.Cut(s, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch field {
	case "event":
		p.typ.Reset()
		p.typ.WriteString(value)
	case "data":
		p.data.WriteString(value)
		p.data.WriteByte('\n')
		p.hasData = true
	case "id":
		if !strings.ContainsRune(value, 0) {
			p.idBuf.Reset()
			p.idBuf.WriteString(value)
		}
	case "retry":
		if n, err := strconv.Atoi(value); err == nil && value != "" && strings.Trim(value, "0123456789") == "" {
			p.retry(n)
		}
	}
}

// fire is "dispatch the event": the id buffer is kept across blocks.
func (p *eventParser) fire() {
	lastID := p.idBuf.String()
	if !p.hasData {
		p.data.Reset()
		p.typ.Reset()
		p.dispatch(Event{}, lastID)
		return
	}
	data := strings.TrimSuffix(p.data.String(), "\n")
	typ := p.typ.String()
	if typ == "" {
		typ = "message"
	}
	p.data.Reset()
	p.typ.Reset()
	p.hasData = false
	p.dispatch(Event{LastEventID: lastID, Type: typ, Data: data, At: time.Now()}, lastID)
}

// StuckStream is an event stream whose client never reads: its socket
// receive buffer and segment size are tiny, so the server's writes block
// after some tens of KiB.
type StuckStream struct {
	conn net.Conn
}

// StuckStream opens GET /events for user over a raw connection that reads
// nothing after the request is sent.
func (s *Server) StuckStream(user string) *StuckStream {
	s.T.Helper()
	d := net.Dialer{Control: tinyReceiveBuffer}
	addr := strings.TrimPrefix(s.URL, "http://")
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		s.T.Fatalf("dial: %v", err)
	}
	req := "GET /events HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + s.Token(user) + "\r\nAccept: text/event-stream\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		s.T.Fatalf("send request: %v", err)
	}
	st := &StuckStream{conn: conn}
	s.T.Cleanup(st.Close)
	return st
}

// Close drops the connection.
func (st *StuckStream) Close() { st.conn.Close() }

// Unstick starts reading the stuck stream of user: the Stream returned
// parses everything the server wrote on the connection, from the first
// byte of its answer, as a client that was only slow would.
func (st *StuckStream) Unstick(t testing.TB, user string) *Stream {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(st.conn), nil)
	if err != nil {
		t.Fatalf("read the stuck stream's answer: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("stuck stream of %s: status %d", user, res.StatusCode)
	}
	s := &Stream{
		t: t, User: user, Header: res.Header,
		body: res.Body, cancel: func() { st.conn.Close() }, done: make(chan struct{}),
		arrived: make(chan struct{}, 1), retry: -1,
	}
	go s.read()
	t.Cleanup(s.Close)
	return s
}
