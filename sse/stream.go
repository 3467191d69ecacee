package sse

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"callsig/calls"
)

// pageSize is how many events one log read returns.
const pageSize = 256

// maxBatch is how many buffered events a stream writes between flushes.
const maxBatch = 64

// flushAt is how many bytes a hijacked stream gathers before it writes
// them (its catch-up, say), short of an explicit flush.
const flushAt = 16 << 10

var (
	errShutdown = errors.New("sse: server shutting down")
	errGone     = errors.New("sse: client gone")
	errEvicted  = errors.New("sse: closed for a newer stream of the user")
)

// ServeEvents streams userID's events to a client on deviceID (GET /events;
// the caller has authenticated the request). The stream ends when the
// client goes away, a write fails or times out, or the hub shuts down; the
// client then reconnects with Last-Event-ID.
//
// Order of work: subscribe first, so nothing committed from then on can be
// missed; then catch the client up from the log (after its Last-Event-ID,
// or with the invitations still pending for a new stream); then write live
// events, dropping any already written (ids only increase).
//
// An idle stream must cost little memory: a server holds tens of thousands.
// So over HTTP/1.x the stream takes the connection over (Hijack) and writes
// the response itself, with no buffers of net/http; it catches up on the
// handler's goroutine, then hands the live part to two small goroutines of
// its own (see goLive) and returns, which frees the handler's deep stack.
// The body is not chunked: it ends when the connection closes
// (Connection: close). Where the connection cannot be taken over (HTTP/2,
// a test recorder) the handler streams through w until the end instead.
func (h *Hub) ServeEvents(w http.ResponseWriter, r *http.Request, userID, deviceID string) {
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would otherwise fire mid-stream and cancel
	// the request (net/http's background read treats it as the client
	// going away).
	_ = rc.SetReadDeadline(time.Time{})

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream

	st := &stream{h: h, w: w, rc: rc, user: userID, device: deviceID, deadlines: true}
	var cut deadliner = rc
	if conn, head := hijack(rc, hdr); conn != nil {
		st.w, st.rc, st.conn, st.head = nil, nil, conn, head
		cut = conn
	}
	last, resume := lastEventID(r)
	sub, head, ok := h.subscribe(userID, deviceID, cut)
	if !ok {
		// Shutting down: an empty stream, so the client reconnects
		// (elsewhere, or here once restarted) with the same Last-Event-ID.
		st.writeHeader()
		if st.writeRaw(openingBlock(h.o.Retry, last, resume && last >= 0)) == nil {
			_ = st.flush()
		}
		st.close()
		return
	}
	st.sub = sub

	ctx := r.Context()
	if err := st.open(ctx, last, resume, head); err != nil {
		st.end(ctx, err)
		return
	}
	if st.conn != nil && st.goLive() {
		return // the stream lives on without this goroutine
	}
	st.end(ctx, st.run(ctx, nil))
}

// hijack takes the connection over from net/http, if it can, and returns
// it with the response head to send first. net/http's buffers are dropped.
func hijack(rc *http.ResponseController, hdr http.Header) (net.Conn, []byte) {
	conn, _, err := rc.Hijack()
	if err != nil {
		return nil, nil // not HTTP/1.x: stream through the ResponseWriter
	}
	// Whatever the client sent after its request is dropped with the
	// reader: an event stream's client sends nothing more.
	hdr.Del("Content-Length")
	hdr.Del("Transfer-Encoding")
	hdr.Set("Connection", "close") // the body ends with the connection
	if _, ok := hdr["Date"]; !ok {
		hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	return conn, b.Bytes()
}

// goLive hands the stream to two goroutines of its own: one writes live
// events and heartbeats (run), the other reads the connection to see the
// client leave (a client sends nothing after its request). It returns
// false, and the handler ends the stream, once the hub is shut down.
func (st *stream) goLive() bool {
	h := st.h
	if !h.adopt(2) {
		return false
	}
	gone := make(chan struct{})
	go func() {
		defer h.streams.Done()
		st.end(h.ctx, st.run(h.ctx, gone))
	}()
	go func() {
		defer h.streams.Done()
		watch(st.conn, gone)
	}()
	return true
}

// watch reads conn until it fails (the client left, or the stream closed
// it), then closes it, which cuts short a write stuck on a client that
// left, and gone.
func watch(conn net.Conn, gone chan<- struct{}) {
	defer close(gone)
	var b [16]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			_ = conn.Close()
			return
		}
	}
}

// end unsubscribes the stream and closes its connection, if it has one.
func (st *stream) end(ctx context.Context, err error) {
	st.h.unsubscribe(st.sub)
	st.close()
	st.ended(ctx, err)
}

// close closes a hijacked connection; the client sees the body end.
func (st *stream) close() {
	if st.conn != nil {
		_ = st.conn.Close()
	}
}

// stream is one GET /events in progress; one goroutine at a time uses it
// (the handler's, then the live one's).
type stream struct {
	h   *Hub
	w   http.ResponseWriter      // nil once hijacked
	rc  *http.ResponseController // nil once hijacked
	sub *subscriber
	// conn is the hijacked connection (nil: writing through w). Its writes
	// are gathered in buf and written by flush; head is the response head,
	// sent with the first flush.
	conn         net.Conn
	buf, head    []byte
	user, device string
	// lastID is the highest id written or passed over: the stream's
	// position in the log, and the duplicate filter.
	lastID    int64
	deadlines bool // false once the writer turned out not to support them
	canStop   bool // Shutdown may end the stream (see open)
	// invitations written since the last flush, reported once flushed.
	invitations []*frame
}

// lastEventID reads Last-Event-ID, or ?lastEventID= when the header is
// absent (EventSource sends the header on reconnection, and the URL still
// holds the first value). An unreadable id comes back as -1.
func lastEventID(r *http.Request) (id int64, ok bool) {
	v := r.Header.Get("Last-Event-ID")
	ok = v != ""
	if !ok {
		if q := r.URL.Query(); q.Has("lastEventID") {
			v, ok = q.Get("lastEventID"), true
		}
	}
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || id < 0 {
		return -1, true
	}
	return id, true
}

// open sends the headers, the opening block and the catch-up.
//
// A resuming client is interruptible from the start: its opening block
// repeats its Last-Event-ID, so if shutdown ends the stream anywhere it
// resumes losslessly. A new stream is not, until its id-only block is out:
// ended before that, its client would come back without an id and miss
// what was committed since it subscribed. So its pending invitations are
// read before anything is sent, and its first block through its id block
// go out in one run that only the write deadline can cut short.
func (st *stream) open(ctx context.Context, last int64, resume bool, head int64) error {
	h := st.h
	reset := false
	if resume {
		var err error
		if reset, err = st.expired(ctx, last, head); err != nil {
			return err
		}
	}
	if resume && !reset {
		st.interruptible()
		st.writeHeader()
		if err := st.writeRaw(openingBlock(h.o.Retry, last, true)); err != nil {
			return err
		}
		st.lastID = last
		if err := st.catchUp(ctx, false); err != nil {
			return err
		}
		return st.flush()
	}
	pending, err := h.o.Log.PendingInvitations(ctx, st.user)
	if err != nil {
		return err
	}
	st.writeHeader()
	if err := st.writeRaw(openingBlock(h.o.Retry, 0, false)); err != nil {
		return err
	}
	if reset {
		if err := st.writeRaw(resetBlock); err != nil {
			return err
		}
	}
	if err := st.pending(pending, head); err != nil {
		return err
	}
	if err := st.flush(); err != nil {
		return err
	}
	st.interruptible()
	return nil
}

// expired reports whether events after last may have been pruned (or last
// is not an id this server gave): the client must start over.
func (st *stream) expired(ctx context.Context, last, head int64) (bool, error) {
	log := st.h.o.Log
	if last < 0 {
		return true, nil
	}
	if last > head {
		// Possibly written from the log before the hub passed it on.
		top, err := log.LastEventID(ctx)
		if err != nil || last > top {
			return true, err
		}
	}
	oldest, err := log.OldestEventID(ctx)
	if err != nil {
		return false, err
	}
	if oldest == 0 {
		return last < head, nil // everything up to head was pruned
	}
	return last < oldest-1, nil
}

// pending writes what a new stream starts with: the invitations still
// pending for the user, then an id-only block that moves the client to the
// head of the log, so a reconnection resumes from there.
func (st *stream) pending(list []calls.Event, head int64) error {
	written := int64(0)
	for i := range list {
		e := &list[i]
		// Later ones reach the subscriber's buffer; writing them here too
		// would put ids out of order.
		if e.ID > head || (e.Device != "" && e.Device != st.device) {
			continue
		}
		if err := st.writeFrame(newFrame(e, time.Time{})); err != nil {
			return err
		}
		written = e.ID
	}
	if head > written || head == 0 {
		if err := st.writeRaw(idBlock(head)); err != nil {
			return err
		}
	}
	st.lastID = head
	return nil
}

// catchUp writes the user's events after lastID from the log. lagging
// marks a live stream that fell behind: its lag is measured from the
// events' own time when the clock is real.
func (st *stream) catchUp(ctx context.Context, lagging bool) error {
	_, realClock := st.h.o.Clock.(calls.SystemClock)
	for {
		list, err := st.h.o.Log.EventsAfter(ctx, st.user, st.lastID, pageSize)
		if err != nil {
			return err
		}
		for i := range list {
			var at time.Time
			if lagging && realClock {
				at = time.UnixMilli(list[i].Time)
			}
			if err := st.writeFrame(newFrame(&list[i], at)); err != nil {
				return err
			}
		}
		if len(list) < pageSize {
			return nil
		}
	}
}

// run writes live events and heartbeats until the stream ends; gone, when
// not nil, closes when the client leaves (the stream then runs on its own
// goroutine: see goLive and onFreshStack).
func (st *stream) run(ctx context.Context, gone <-chan struct{}) error {
	h := st.h
	tick := time.NewTicker(h.o.Heartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.done:
			return errShutdown
		case <-gone:
			return errGone
		case <-st.sub.evicted:
			return errEvicted
		case <-tick.C:
			err = st.work(gone != nil, func() error {
				if err := st.writeRaw(heartbeatBlock); err != nil {
					return err
				}
				return st.flush()
			})
		case f := <-st.sub.ch:
			err = st.work(gone != nil, func() error {
				if err := st.batch(ctx, f); err != nil {
					return err
				}
				return st.flush()
			})
		}
		if err != nil {
			return err
		}
	}
}

// work runs f, on a goroutine of its own when fresh is set (see
// onFreshStack).
func (st *stream) work(fresh bool, f func() error) error {
	if !fresh {
		return f()
	}
	return onFreshStack(f)
}

// onFreshStack runs f on a new goroutine and waits for it. Writing (and
// reading the log, for a lagging stream) grows a goroutine's stack past its
// initial 2 KiB, and a parked goroutine keeps its stack until a collection
// shrinks it; run's own goroutine, parked in its select nearly all the
// time, so keeps the smallest stack. A goroutine costs about a microsecond.
func onFreshStack(f func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return <-errc
}

// batch writes f and whatever else is buffered, up to maxBatch events.
func (st *stream) batch(ctx context.Context, f *frame) error {
	for n := 1; ; n++ {
		// Checked before each write: the event that did not fit is older
		// than anything buffered after it, so the log must come first.
		if st.sub.lagging.Swap(false) {
			if err := st.catchUp(ctx, true); err != nil {
				return err
			}
		}
		if f != nil {
			if err := st.writeFrame(f); err != nil {
				return err
			}
		}
		if n == maxBatch {
			return nil
		}
		select {
		case f = <-st.sub.ch:
		default:
			return nil
		}
	}
}

// writeFrame writes f unless the stream is past it or it is for another
// device.
func (st *stream) writeFrame(f *frame) error {
	if f.id <= st.lastID {
		return nil
	}
	st.lastID = f.id
	if !f.forDevice(st.device) {
		return nil
	}
	if err := st.writeRaw(f.bytes); err != nil {
		return err
	}
	m := st.h.m
	m.written.Inc()
	if !f.committed.IsZero() {
		m.lag.Observe(time.Since(f.committed).Seconds())
	}
	if f.typ == calls.EventReceived {
		st.invitations = append(st.invitations, f)
	}
	return nil
}

// writeHeader starts the response.
func (st *stream) writeHeader() {
	if st.conn == nil {
		st.w.WriteHeader(http.StatusOK)
		return
	}
	st.buf = append(st.buf, st.head...)
	st.head = nil
}

// writeRaw writes b under a fresh write deadline (a hijacked stream
// gathers it for flush).
func (st *stream) writeRaw(b []byte) error {
	if st.conn != nil {
		if err := st.stopping(); err != nil {
			return err
		}
		st.buf = append(st.buf, b...)
		if len(st.buf) >= flushAt {
			return st.flush()
		}
		return nil
	}
	if err := st.deadline(); err != nil {
		return err
	}
	_, err := st.w.Write(b)
	return err
}

// deadline arms the per-write deadline. The server has no WriteTimeout (it
// would kill every stream); this bounds each write instead, so a client
// that stops reading is dropped and resumes later with Last-Event-ID.
func (st *stream) deadline() error {
	if st.deadlines {
		var err error
		if at := time.Now().Add(st.h.o.WriteTimeout); st.conn != nil {
			err = st.conn.SetWriteDeadline(at)
		} else {
			err = st.rc.SetWriteDeadline(at)
		}
		if errors.Is(err, http.ErrNotSupported) {
			st.deadlines = false
			st.h.log.Warn("event stream without write deadlines: the response writer does not support them")
		}
	}
	return st.stopping()
}

// stopping returns errShutdown once the hub shuts down, if the stream may
// stop (see open).
func (st *stream) stopping() error {
	if !st.canStop {
		return nil
	}
	// Shutdown moves the deadline to now to unblock a stuck write; a
	// deadline set just after must not undo that.
	select {
	case <-st.h.done:
		return errShutdown
	default:
		return nil
	}
}

// interruptible lets Shutdown end the stream from now on (see open).
func (st *stream) interruptible() {
	st.canStop = true
	st.sub.interruptible.Store(true)
}

// flush pushes the written bytes to the client, then reports the
// invitations they carried as delivered.
func (st *stream) flush() error {
	if err := st.deadline(); err != nil {
		return err
	}
	if st.conn != nil {
		if len(st.buf) > 0 {
			_, err := st.conn.Write(st.buf)
			st.buf = nil // not kept: an idle stream holds no buffer
			if err != nil {
				return err
			}
		}
	} else if err := st.rc.Flush(); err != nil {
		return err
	}
	for i, f := range st.invitations {
		st.h.work.delivered(f.id, f.callID, st.user)
		st.invitations[i] = nil
	}
	st.invitations = st.invitations[:0]
	return nil
}

// ended logs why a stream ended when that is worth knowing.
func (st *stream) ended(ctx context.Context, err error) {
	if err == nil || errors.Is(err, errShutdown) || errors.Is(err, errGone) || errors.Is(err, errEvicted) || ctx.Err() != nil {
		return
	}
	st.h.log.Debug("event stream ended", "user", st.user, "device", st.device, "err", err)
}
