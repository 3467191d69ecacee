package sse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// errClientSent ends a stream whose client sent more than
	// maxClientBytes after its request.
	errClientSent = errors.New("sse: the client wrote into its stream")
	// errTokenExpired ends a stream at its token's exp.
	errTokenExpired = errors.New("sse: the stream's token expired")
	// errPrunedBehind ends a stream whose catch-up found the log pruned
	// past its position between two pages: its client resumes from its
	// last id, and is told to reset.
	errPrunedBehind = errors.New("sse: the log was pruned past the stream's position during its catch-up")
	// errRestoredBehind ends a stream whose position the log learned,
	// while it served, to be in a restore's gap (a PostgreSQL database
	// restored under a running node: RestoredLog): its client saw events
	// the log does not hold, resumes from its last id, and is told to
	// reset.
	errRestoredBehind = errors.New("sse: the log was restored under the stream, past its position")
)

// ServeEvents streams userID's events to a client on deviceID (GET /events;
// the caller has authenticated the request). The stream ends when the
// client goes away, a write fails or times out, or the hub shuts down; the
// client then reconnects with Last-Event-ID.
//
// Order of work: subscribe first, so nothing committed from then on can be
// missed; send the headers and the opening block at once, before any read
// of the log; then catch the client up from the log (after its
// Last-Event-ID, or with the invitations still pending for a new stream);
// then write live events, dropping any already written (ids only
// increase). Every log read is bounded (Options.ReadTimeout, page sizes,
// Options.PendingReplay) and ends as soon as the client leaves.
//
// An idle stream must cost little memory: a server holds tens of thousands.
// So over HTTP/1.x the stream takes the connection over (Hijack) and writes
// the response itself, with no buffers of net/http; the handler returns
// at once, which frees those buffers and its deep stack, and the stream
// catches up on a goroutine of its own, then lives on one small goroutine
// that reads the connection, to see the client leave, and is woken from
// that read for everything else (see serve). The body is not chunked: it
// ends when the connection closes (Connection: close). Where the
// connection cannot be taken over (HTTP/2, a test recorder) the handler
// streams through w until the end instead.
//
// tokenLeft is how long the request's token has before its exp (0: no
// limit): the stream must not outlive it. TokenWarning (of hub-clock time)
// before the end it sends tokenWillExpire, and at the end it
// closes (see armToken).
func (h *Hub) ServeEvents(w http.ResponseWriter, r *http.Request, userID, deviceID string, tokenLeft time.Duration) {
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would otherwise fire mid-stream and cancel
	// the request (net/http's background read treats it as the client
	// going away).
	_ = rc.SetReadDeadline(time.Time{})

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream

	st := &stream{h: h, w: w, rc: rc, user: userID, device: deviceID, deadlines: true, charge: chargeFrom(r.Context()),
		beatEvent: r.URL.Query().Get("heartbeat") == "event"}
	if tokenLeft > 0 {
		// Measured from now on the hub's clock, so tests drive it.
		st.expires = h.o.Clock.Now().Add(tokenLeft)
	}
	var cut deadliner = rc
	if conn, head := hijack(rc, hdr); conn != nil {
		st.w, st.rc, st.conn, st.head = nil, nil, conn, head
		cut = conn
		// Asked once, while the socket is surely open: a failure later
		// (closed as the client left) is no licence to count writes.
		_, st.ackable = h.o.unackedBytes(conn)
	}
	last, resume := lastEventID(r)
	// The context of the stream's log reads, ended when the client leaves,
	// when the stream ends or is evicted (see subscriber.stop). Not the
	// request's once the connection is taken over: that one ends when this
	// handler returns, and it holds the request alive.
	base := context.Background()
	if st.conn == nil {
		base = r.Context() // net/http cancels it when the client leaves
	}
	st.ctx, st.stopCtx = context.WithCancel(base)
	sub, head, ok := h.subscribe(userID, deviceID, cut, st.conn, st.cancel)
	if ok {
		// The subscriber's copies: these may point into the request.
		st.user, st.device = sub.user, sub.device
	}
	// The stream's goroutines (this one, then the opening one; and the
	// one of serve) are counted from here, for Run to wait on.
	goroutines := 1
	if st.conn != nil {
		goroutines = 2
	}
	if ok && !h.adopt(goroutines) {
		h.unsubscribe(sub)
		ok = false
	}
	if !ok {
		// Shutting down: an empty stream, so the client reconnects
		// (elsewhere, or here once restarted) with the same Last-Event-ID.
		st.writeHeader()
		if st.writeRaw(openingBlock(h.o.Retry, last, resume && last >= 0)) == nil {
			_ = st.flush()
		}
		st.close()
		st.cancel()
		return
	}
	st.sub = sub

	st.armToken(tokenLeft)
	if st.conn != nil {
		st.opening = openArgs{last: last, resume: resume, head: head} // before serve may read it
		go st.serve()
		// The handler returns now, so net/http's buffers for the
		// connection (a reader and a writer, 4 KiB each, which it never
		// reuses after a takeover) and the handler's deep stack are freed
		// at once, not after the catch-up: in a burst of opens the
		// catch-ups queue for their turn to read the log (see read), and
		// each waiting handler held them. An opener (see startOpening)
		// takes over this one's count in h.streams.
		if !h.perUser() && h.o.Announce == nil {
			// Nothing to read before the head: it goes out now, however
			// many streams wait for an opener.
			if err := st.sendHead(last, resume); err != nil {
				st.end(err)
				h.streams.Done()
				return
			}
		}
		h.startOpening(st)
		return
	}
	if st.openOrEnd(last, resume, head) {
		st.end(st.run())
		h.streams.Done()
	}
}

// openOrEnd announces the stream, unless its head is out (the heads stage
// announced it, see openHead), and opens it (see open); when that fails it
// ends the stream, gives up its goroutine's count in h.streams and returns
// false.
func (st *stream) openOrEnd(last int64, resume bool, head int64) bool {
	if !st.headSent {
		_ = st.announce() // a failure is logged; the presence report retries
	}
	if err := st.open(last, resume, head); err != nil {
		st.end(err)
		st.h.streams.Done()
		return false
	}
	return true
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

// end unsubscribes the stream and closes its connection, if it has one.
func (st *stream) end(err error) {
	st.reportFlushedReplay()
	// A client may acknowledge and close at once (its FIN carries the
	// ACK): what it acknowledged counts, read while the socket is open.
	st.checkAcks(time.Now())
	st.h.unsubscribe(st.sub)
	st.disarmToken()
	st.close()
	st.ended(err)
	st.cancel()
}

// close closes a hijacked connection; the client sees the body end.
func (st *stream) close() {
	if st.conn != nil {
		_ = st.conn.Close()
	}
}

// stream is one GET /events in progress; one goroutine at a time writes it
// (the handler's; when hijacked, the opening one's, then serve's).
type stream struct {
	h   *Hub
	w   http.ResponseWriter      // nil once hijacked
	rc  *http.ResponseController // nil once hijacked
	sub *subscriber

	// charge counts what the stream replays from the log against its
	// user's share (nil: free); owedUntil is when the replay may read its
	// next page (see pay, pause).
	charge    Charge
	owedUntil time.Time
	// ctx bounds the stream's log reads: cancelled (see cancel) when the
	// client leaves, when the stream ends and, once the stream is
	// interruptible (see open), when the hub shuts down.
	ctx     context.Context
	stopCtx context.CancelFunc
	// op cancels the wait for, or use of, the store in progress (see
	// opContext), under opMu.
	opMu sync.Mutex
	op   context.CancelFunc
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
	// beatEvent: the client asked for its heartbeats as events
	// (?heartbeat=event), which an EventSource dispatches and a comment is
	// not: the one way a browser app can tell a silent stream (a phone
	// that changed networks, a half-open connection) from a quiet one.
	beatEvent bool
	canStop   bool // Shutdown may end the stream (see open)
	// The flags sit together: a stream is allocated in a size class, and
	// a flag between wider fields cost 8 bytes of padding.
	unlisted bool // see invitations
	headSent bool // the response head and the opening block are out
	ackable  bool // the socket tells what its peer acknowledged (see acked.go)
	// invitations written since the last flush, reported once flushed
	// (see flushed). While unlisted (a replay from the log), they go to
	// replayed instead, and a flush moves them to replayedOut:
	// reportReplayed reports those still unreceived, and a stream ending
	// before it (a write, or its read, failed) reports them all, as a
	// flush would have (see end).
	invitations []*frame
	// acks holds a hijacked stream's invitations written but not yet
	// acknowledged by the client (nil: none; see acked.go).
	acks        *ackState
	replayed    []*frame
	replayedOut []*frame
	// expires is when the stream's token expires, on the hub's clock (zero:
	// never); see armToken.
	expires time.Time
	// opening holds what a hijacked stream's opener needs, slot the
	// openers whose slot it holds, if any (see startOpening).
	opening openArgs
	slot    *openers
	// picked is set by the opener that takes the stream, or by serve when
	// the client left before one did (see serve).
	picked atomic.Bool
	// clientSent counts what the client sent on the connection after its
	// request, read by serve or, during a read of the log, watchClient:
	// one count for both (see maxClientBytes).
	clientSent int
	// queuedBeat is when serve writes the next heartbeat of a stream
	// waiting in the catch-ups' queue with its headers out (Hub.since; 0:
	// not waiting so). See beatWhileQueued.
	queuedBeat atomic.Int64
	// retrying is set while a retry of a log read the store refused is
	// pending (see retryLater).
	retrying atomic.Bool
	// The state of a hijacked stream's serve loop (see conn.go).
	state    atomic.Int32
	nextBeat time.Time
	token    tokenState
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
// The headers and the opening block go out first, before any read of the
// log, so the client sees the stream open at once whatever the catch-up
// costs (a new stream's block carries no id, a resuming one's repeats the
// client's own).
//
// Shutdown may end a stream (cut its writes, cancel its log reads) only
// once its client could resume losslessly: interruptible. A resuming
// client can as soon as it is known not to need a reset: its opening block
// repeats its Last-Event-ID, and whatever follows has higher ids, in order.
// A new stream (or a reset one) cannot until its synced event is out:
// ended before that, its client would come back without an id (or with one
// of its pending invitations') and miss what was committed since it
// subscribed, e.g. its own callInvitationCreated. So from the opening block
// through the id block it is not interruptible: its pending invitations
// are read whatever Shutdown does (bounded by Options.ReadTimeout, ended
// only by the client leaving), and written with the id block in one run
// that only the write deadline can cut short.
//
// With PerUserIDOrder the head is the user's newest id, read before the
// headers go out (the one read that precedes them, a primary-key lookup):
// whatever commits once the client sees its stream open then has a higher
// id and is read from the log. If that read fails, the stream still sends
// its opening block, then ends: the client resumes where it was.
func (st *stream) open(last int64, resume bool, head int64) error {
	h := st.h
	var headErr error
	if !st.headSent {
		if h.perUser() {
			head, headErr = st.userHead(true)
		}
		if err := st.sendHead(last, resume); err != nil {
			return err
		}
	}
	if headErr != nil {
		return headErr
	}
	reset := false
	if resume {
		var err error
		if reset, err = st.expired(last, head); err != nil {
			return err
		}
	}
	if resume && !reset {
		st.interruptible()
		st.setPosition(last)
		if err := st.rederive(last); err != nil {
			return err
		}
		gap, more, err := st.resumeFrom(last, head)
		if err != nil {
			return err
		}
		if !gap {
			if more {
				if err := st.catchUp(false, 0); err != nil {
					return err
				}
			}
			return st.flush()
		}
		reset = true // pruned past last since expired looked
	}
	var pending []calls.Event
	err := st.read(func(ctx context.Context) (err error) {
		pending, err = h.o.Log.PendingInvitations(ctx, st.user, h.o.PendingReplay)
		return err
	})
	if err != nil {
		st.resetOpening()
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
	// The newest PendingReplay pending up to head hold every one sent.
	if err := st.reportReplayed(head, h.o.PendingReplay); err != nil {
		return err
	}
	st.interruptible()
	return nil
}

// reportReplayed flushes what the stream wrote, then reports as delivered
// the invitations it replayed from the log (st.replayed, ids up to upTo)
// whose invitee is still inviting or notYetReceived, as the rows say: a
// replay holds received ones too (a new stream's pending invitations, a
// resume's events), and each report is a write transaction. Reporting
// every one flushed cost one request (a token of the rate limit) up to
// 100 writes of nothing, which the work's set of reported ids hid only
// until it was emptied (8,192 ids) or the server restarted. One bounded
// read instead; limit must be at least the pending invitations of the
// user above the replay's start and up to upTo, so that the newest limit
// of them (what is read) hold every one replayed.
func (st *stream) reportReplayed(upTo int64, limit int) error {
	if err := st.flush(); err != nil {
		return err
	}
	if len(st.replayedOut) == 0 {
		return nil
	}
	var list []calls.Event
	err := st.read(func(ctx context.Context) (err error) {
		list, err = st.h.o.Log.UnreceivedInvitations(ctx, st.user, upTo, limit)
		return err
	})
	if err != nil {
		return err // the stream ends, and end reports them all
	}
	sent := st.replayedOut
	st.replayedOut = nil
	var unreceived []*frame
	for _, e := range list {
		if i := slices.IndexFunc(sent, func(f *frame) bool { return f.id == e.ID }); i >= 0 {
			unreceived = append(unreceived, sent[i])
		}
	}
	st.flushed(unreceived)
	return nil
}

// reportFlushedReplay reports every replayed invitation a flush sent and
// reportReplayed has not read about: the stream is ending, and its client
// may have them (once acknowledged, where the socket tells: see flushed).
// Reports are idempotent; this costs at most what the flushes before the
// failure sent.
func (st *stream) reportFlushedReplay() {
	st.flushed(st.replayedOut)
	clear(st.replayedOut)
	st.replayedOut = nil
}

// replayPage writes a page of a resume's replay from the log (unlisted),
// charges it (pay: before its bytes go out), flushes it and reports its
// invitations still unreceived.
func (st *stream) replayPage(list []calls.Event) error {
	st.unlisted = true
	n, err := st.writePage(list, false)
	st.unlisted = false
	st.pay(n)
	if err != nil || len(list) == 0 {
		return err
	}
	invitations := 0
	for i := range list {
		if list[i].Type == calls.EventReceived {
			invitations++
		}
	}
	return st.reportReplayed(list[len(list)-1].ID, invitations)
}

// userHead reads the user's newest event id (0: none), for PerUserIDOrder:
// in turn with the other streams' reads (read), or, for the headers (see
// openHead), in a turn of the head reads' own (Hub.headReaders).
func (st *stream) userHead(inTurn bool) (int64, error) {
	var head int64
	f := func(ctx context.Context) error {
		newest, err := st.h.o.Log.NewestEventIDs(ctx, []string{st.user})
		head = newest[st.user]
		return err
	}
	if !inTurn {
		octx, ocancel := st.opContext()
		defer ocancel()
		select {
		case st.h.headReaders <- struct{}{}:
			defer func() { <-st.h.headReaders }()
		case <-octx.Done():
			return 0, fmt.Errorf("sse: wait to read the user's newest event id: %w", octx.Err())
		}
		if st.h.silent(&st.h.storeSilentUntil) {
			return 0, errStoreSilent // failed for another stream while this one waited its turn
		}
		ctx, cancel := context.WithTimeout(octx, min(st.h.o.ReadTimeout, headsStoreBound))
		defer cancel()
		err := f(ctx)
		return head, err
	}
	err := st.read(f)
	return head, err
}

// setPosition moves the stream's position in the log (lastID), published
// for the periodic catch-up with PerUserIDOrder.
func (st *stream) setPosition(id int64) {
	st.lastID = id
	if st.h.perUser() {
		st.sub.position.Store(id)
	}
}

// read runs one read of the log in turn with the other streams'
// (Options.LogReaders). The wait for a turn ends only with the stream (a
// burst of opens queues here, cheaply, rather than failing and coming back
// as a burst of reconnections); the read itself is bounded by
// Options.ReadTimeout. Both end when the client leaves.
func (st *stream) read(f func(ctx context.Context) error) error {
	// First the user's own turn, then one of the shared ones: a user's
	// streams wait for each other here, so each user has at most one read
	// waiting for (or holding) a shared token.
	octx, ocancel := st.opContext()
	defer ocancel()
	if st.conn != nil && st.state.Load() == live {
		defer st.watchClient()()
	}
	for _, tokens := range []chan struct{}{st.h.userReader(st.user), st.h.readers} {
		if err := st.awaitTurn(octx, tokens); err != nil {
			return err
		}
		defer func() { <-tokens }()
	}
	// A read that ran its whole bound would pass the next heartbeat:
	// written now instead of late (but not before every read when
	// heartbeats come more often than a read's bound).
	if st.headSent && time.Until(st.nextBeat) < min(st.h.o.ReadTimeout, st.h.o.Heartbeat/2) {
		if err := st.beat(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(octx, st.h.o.ReadTimeout)
	defer cancel()
	return f(ctx)
}

// awaitTurn takes a token of tokens for read, writing the heartbeats that
// fall due meanwhile once the stream's headers are out. Waits for a turn
// have no bound (a burst of openings queues there), and serve, or the
// opener, which writes the heartbeats otherwise, is the one waiting: a
// long queue, or a slow store, kept an opening or a catch-up silent past
// the contract's comment line every 15 s, and a proxy may take a quiet
// stream for dead.
func (st *stream) awaitTurn(ctx context.Context, tokens chan struct{}) error {
	select {
	case tokens <- struct{}{}:
		return nil
	default:
	}
	beat, stop := st.beatDue()
	defer stop()
	for {
		select {
		case tokens <- struct{}{}:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("sse: wait to read the event log: %w", ctx.Err())
		case <-beat:
			if err := st.beat(); err != nil {
				return err
			}
			beat = time.After(st.h.o.Heartbeat)
		}
	}
}

// beatDue returns the channel of the heartbeat due next while the stream
// waits (nil before its headers are out: nothing is written then), and
// what stops its timer. After each, the next is a Heartbeat away.
func (st *stream) beatDue() (<-chan time.Time, func()) {
	if !st.headSent {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(st.nextBeat))
	return t.C, func() { t.Stop() }
}

// beat writes a heartbeat and sets the next one (see read).
func (st *stream) beat() error {
	st.nextBeat = time.Now().Add(st.h.o.Heartbeat)
	return st.writeHeartbeat()
}

// watchClient has a goroutine read the connection of a live stream while
// serve, its reader otherwise, waits for a turn to read the log and reads
// it (see read): a client that leaves then cancels the stream (its wait,
// its read), which ends and goes offline at once, not once a turn came
// and the read ran for nobody. Only when a live stream reads the log (a
// catch-up, with PerUserIDOrder a delivery), so an idle stream costs
// nothing more. The returned func stops the goroutine and waits for it.
//
// A poke (a deadline set to wake serve) may end the watching Read: it
// goes on watching until stopped. serve, once it gets the connection back,
// checks for work before it reads, so the poke is not lost.
func (st *stream) watchClient() (stop func()) {
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [16]byte
		for {
			n, err := st.conn.Read(b[:])
			if st.clientSent += n; st.clientSent > maxClientBytes {
				st.cancel() // as if it left (see serve)
				return
			}
			switch {
			case err == nil:
			case errors.Is(err, os.ErrDeadlineExceeded):
				if stopping.Load() {
					return
				}
				_ = st.conn.SetReadDeadline(time.Time{})
				if stopping.Load() { // its deadline may have come before ours
					return
				}
			default:
				st.cancel() // the client left
				return
			}
		}
	}()
	return func() {
		stopping.Store(true)
		_ = st.conn.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}

// opContext returns the context of one wait for, or use of, the store (a
// log read, the announce): it ends with the stream's (see cancel). A
// hijacked stream's is not derived from st.ctx: a child registers in its
// parent's set of children, which, once made, stays allocated with the
// parent's done channel for the stream's life (some 500 bytes per idle
// stream); cancel ends it instead. One at a time: only the goroutine that
// writes the stream uses the store for it.
func (st *stream) opContext() (context.Context, context.CancelFunc) {
	if st.conn == nil {
		return context.WithCancel(st.ctx) // the request's, which net/http ends
	}
	ctx, cancel := context.WithCancel(context.Background())
	st.opMu.Lock()
	defer st.opMu.Unlock()
	if st.ctx.Err() != nil {
		cancel()
		return ctx, cancel
	}
	st.op = cancel
	return ctx, func() {
		st.opMu.Lock()
		st.op = nil
		st.opMu.Unlock()
		cancel()
	}
}

// cancel ends the stream's context, and with it a wait for, or a use of,
// the store (see opContext).
func (st *stream) cancel() {
	st.stopCtx()
	st.opMu.Lock()
	if st.op != nil {
		st.op()
	}
	st.opMu.Unlock()
}

// rederive reports again as delivered the user's invitations at or below
// last that are still inviting or notYetReceived. The client resumed after
// last, so it had every event up to there meant for its device; a report
// lost with the server (a crash between the flush and MarkDelivered's
// commit) or given up after its retries is thus made from what is durable:
// the log, the call rows and the client's own Last-Event-ID. Reports are
// idempotent, so one made twice costs a no-op transaction.
//
// One inaccuracy remains, only past Options.PendingReplay: a new stream
// with more pending invitations than that skips the oldest, yet its id
// block puts its client past them. Only the newest PendingReplay ones up
// to last are looked at, which are the ones it sent unless some of those
// were answered since.
func (st *stream) rederive(last int64) error {
	if last <= 0 {
		return nil
	}
	var list []calls.Event
	err := st.read(func(ctx context.Context) (err error) {
		list, err = st.h.o.Log.UnreceivedInvitations(ctx, st.user, last, st.h.o.PendingReplay)
		return err
	})
	if err != nil {
		return err
	}
	for _, e := range list {
		if e.Device == "" || e.Device == st.device {
			st.h.work.delivered(e.ID, e.CallID, st.user, e.Time)
		}
	}
	return nil
}

// expired reports whether events after last may have been pruned (or last
// is not an id this server gave): the client must start over.
func (st *stream) expired(last, head int64) (bool, error) {
	log := st.h.o.Log
	if last < 0 {
		return true, nil
	}
	if st.h.neverGiven(last) {
		// The client saw events after the backup this log was restored
		// from: what it knows is not what the log holds.
		return true, nil
	}
	var moved int64
	if st.h.perUser() {
		// head is the user's newest id: above it, last is no id this
		// user was given (and resuming from it would skip the user's
		// next ids), unless SQLite gave it before the log was moved to
		// PostgreSQL (movedEventID); equal to it, nothing was missed.
		if last == head {
			return false, nil
		}
		if last > head {
			var err error
			if moved, err = st.movedEventID(); err != nil {
				return false, err
			}
			if last > moved {
				return true, nil
			}
		}
	}
	var expired bool
	err := st.read(func(ctx context.Context) error {
		if last > head {
			// Possibly written from the log before the hub passed it on.
			top, err := log.LastEventID(ctx)
			if err != nil || last > top {
				expired = true
				return err
			}
		}
		oldest, err := log.OldestEventID(ctx)
		if err != nil {
			return err
		}
		if oldest == 0 {
			// Everything up to head was pruned, and with a log moved
			// from SQLite everything up to where its ids ended: a user
			// with no event since the move has head 0, so an id SQLite
			// gave below its last one may be followed by events of the
			// user's that are gone (a client resumed from it silently
			// skipped them).
			expired = last < max(head, moved)
		} else {
			expired = last < oldest-1
		}
		return nil
	})
	return expired, err
}

// resumeFrom writes the first page of a resuming stream's catch-up, after
// last, and reports gap, having written nothing, when the log was pruned
// past last since expired looked: between the two, a reconnection storm
// can keep a stream waiting for its turn to read for seconds, and a
// client at the retention's edge would otherwise skip the events pruned
// meanwhile without a reset. The oldest id is read after the page: while
// the log holds anything, pruning only raises it, so if it is still at
// most last+1 the page read every event after last. An empty log (oldest
// 0) says nothing of what went before the page: pruning runs in batches,
// and one before the read may have taken events after last that the
// batch emptying the log hides. Then only a page with nothing to read up
// to head is whole. more reports a full page: the catch-up goes on.
func (st *stream) resumeFrom(last, head int64) (gap, more bool, err error) {
	log := st.h.o.Log
	var list []calls.Event
	err = st.read(func(ctx context.Context) error {
		st.h.m.logReads.Inc()
		var err error
		if list, err = log.EventsAfter(ctx, st.user, last, pageSize); err != nil {
			return err
		}
		oldest, err := log.OldestEventID(ctx)
		gap = oldest == 0 && (len(list) > 0 || last < head) || oldest > last+1
		return err
	})
	if err != nil || gap {
		return gap, false, err
	}
	err = st.replayPage(list)
	return false, len(list) == pageSize, err
}

// movedEventID returns the last id SQLite had given when the log was
// moved from it (0: never moved; see MovedLog). A stream opened on SQLite
// ends its opening with an id-only block carrying the global head, so a
// client idle since holds an id above its own user's newest; every id
// given since the move is above it, so resuming from it skips nothing.
func (st *stream) movedEventID() (int64, error) {
	ml, ok := st.h.o.Log.(MovedLog)
	if !ok {
		return 0, nil
	}
	var moved int64
	err := st.read(func(ctx context.Context) (err error) {
		moved, err = ml.MovedEventID(ctx)
		return err
	})
	return moved, err
}

// pending writes what a new stream starts with: the invitations still
// pending for the user, then the synced event that moves the client to the
// head of the log, so a reconnection resumes from there. It is written
// even when the last invitation is the head: the opening always ends with
// it, and a client may wait for it. What it writes is a replay from the
// log, charged as a resume's is (pay): up to Options.PendingReplay
// invitations of some 25 KB each at the largest extendedData, which a
// user reopening streams in a loop got for one request's token apiece.
//
// Its invitations are not listed for flush to report (unlisted), since
// most of them may have been received before: reportReplayed reports
// those that were not.
func (st *stream) pending(list []calls.Event, head int64) error {
	n := 0
	defer func() { st.pay(n) }()
	st.unlisted = true
	defer func() { st.unlisted = false }()
	for i := range list {
		e := &list[i]
		// Later ones reach the subscriber's buffer; writing them here too
		// would put ids out of order.
		if e.ID > head || (e.Device != "" && e.Device != st.device) {
			continue
		}
		f := newFrame(e, time.Time{})
		n += len(f.bytes)
		if err := st.writeFrame(f); err != nil {
			return err
		}
	}
	if err := st.writeRaw(syncedBlock(head)); err != nil {
		return err
	}
	st.setPosition(head)
	return nil
}

// catchUp writes the user's events after lastID from the log, a page per
// bounded read. lagging marks a live stream that fell behind: its lag is
// measured from the events' own time when the clock is real.
//
// From page checkFrom on (0: the first), the oldest id is read after each
// page, as resumeFrom does for its first: a long catch-up at the
// retention's edge, pruned between two pages, skipped the events pruned
// without a reset. Such a gap cannot be reset in place, frames written,
// so the stream ends (errPrunedBehind): its client resumes from its last
// id and is told to reset. The first page of a live stream's catch-up is
// not checked: its position is recent, far from what pruning removes.
func (st *stream) catchUp(lagging bool, checkFrom int) error {
	for page := 0; ; page++ {
		if !lagging {
			if err := st.pause(); err != nil {
				return err
			}
		}
		var list []calls.Event
		from, gap := st.lastID, false
		err := st.read(func(ctx context.Context) (err error) {
			st.h.m.logReads.Inc()
			if list, err = st.h.o.Log.EventsAfter(ctx, st.user, from, pageSize); err != nil || page < checkFrom {
				return err
			}
			oldest, err := st.h.o.Log.OldestEventID(ctx)
			gap = oldest > from+1 || oldest == 0 // emptied: see resumeFrom
			return err
		})
		if err != nil {
			return err
		}
		if gap {
			// What was written is the client's: its last id is where it
			// resumes from, to be told to reset.
			_ = st.flush()
			return errPrunedBehind
		}
		// A live stream's events are new: their invitations are reported
		// as flushed, and its reads are not counted. A replay's may have
		// been received before, and are paid for.
		if lagging {
			_, err = st.writePage(list, true)
		} else {
			err = st.replayPage(list)
		}
		if err != nil {
			return err
		}
		if len(list) < pageSize {
			return nil
		}
	}
}

// writePage writes a page of the log read by a catch-up, and returns the
// bytes of its frames. A lagging stream's frames carry their event's time
// as the start of their delivery lag (on the real clock only: a fake
// one's times are not wall times).
func (st *stream) writePage(list []calls.Event, lagging bool) (n int, err error) {
	_, realClock := st.h.o.Clock.(calls.SystemClock)
	for i := range list {
		var at time.Time
		if lagging && realClock {
			at = time.UnixMilli(list[i].Time)
		}
		f := newFrame(&list[i], at)
		n += len(f.bytes)
		if err := st.writeFrame(f); err != nil {
			return n, err
		}
	}
	return n, nil
}

// run writes live events and heartbeats until the stream ends, for a
// stream that could not take its connection over (a hijacked one is
// served by serve).
func (st *stream) run() error {
	h := st.h
	tick := time.NewTicker(h.o.Heartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-st.ctx.Done():
			return st.ctx.Err()
		case <-h.done:
			return errShutdown
		case <-st.sub.evicted:
			return errEvicted
		case <-tick.C:
			if st.tokenPast() { // the clock stepped past it (see tokenPast)
				return errTokenExpired
			}
			err = st.beat() // and the next one's time, for read's check
		case <-st.sub.ch: // frames, a wake-up, or a token timer (see armToken)
			var warn bool
			if warn, err = st.tokenDue(); err == nil && warn {
				err = st.writeWarning()
			}
			if err == nil && st.sub.due() {
				err = st.writeBatch()
			}
		}
		if err != nil {
			return err
		}
	}
}

// writeWarning writes and flushes tokenWillExpire.
func (st *stream) writeWarning() error {
	if err := st.writeRaw(tokenWillExpireBlock(st.lastID, st.expires.Sub(st.h.o.Clock.Now()))); err != nil {
		return err
	}
	return st.flush()
}

// writeHeartbeat writes and flushes a heartbeat: a comment, and the
// heartbeat event too where the client asked for it.
func (st *stream) writeHeartbeat() error {
	b := heartbeatBlock
	if st.beatEvent {
		b = heartbeatEventBlock
	}
	if err := st.writeRaw(b); err != nil {
		return err
	}
	return st.flush()
}

// writeBatch writes what is buffered (see batch), and flushes.
func (st *stream) writeBatch() error {
	if err := st.batch(); err != nil {
		return err
	}
	return st.flush()
}

// onFreshStack runs f on a new goroutine and waits for it. Writing (and
// reading the log, for a lagging stream) grows a goroutine's stack past its
// initial 2 KiB, and a parked goroutine keeps its stack until a collection
// shrinks it; serve's goroutine, parked in its read nearly all the time,
// so keeps the smallest stack. A goroutine costs about a microsecond.
func onFreshStack(f func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return <-errc
}

// batch writes what is buffered, up to maxBatch events, reading the log
// first when the stream lags.
func (st *stream) batch() error {
	for n := 0; ; n++ {
		if n == maxBatch {
			// More may wait, or the stream may have fallen behind
			// meanwhile: come back for them.
			st.sub.push(nil)
			return nil
		}
		// Checked before each write: the event that did not fit is older
		// than anything buffered after it, so the log must come first.
		perUser := st.h.perUser()
		if perUser {
			st.sub.reading.Store(true) // before the flag is taken: see Hub.catchUp
		}
		if st.sub.lagging.Swap(false) {
			if err := st.catchUp(true, 1); err != nil {
				if !storeDown(err) || st.ctx.Err() != nil {
					return err
				}
				// The store cannot serve now (PostgreSQL out of reach, say):
				// the stream stays open and behind, writes nothing newer,
				// and reads again shortly; its client keeps its connection.
				st.sub.lagging.Store(true)
				if perUser {
					st.sub.reading.Store(false)
				}
				// What is buffered is in the log, past lastID, and the
				// read that comes first will write it; kept, it would
				// wake the stream again at once, in a loop.
				st.sub.drop()
				st.retryLater()
				return nil
			}
			if perUser {
				// Read up to lastID, nothing skipped: the hand-over may
				// go on from there.
				st.sub.resumeHandOver(st.lastID)
			}
		}
		if perUser {
			st.sub.reading.Store(false)
		}
		f := st.sub.pop()
		if f == nil {
			return nil
		}
		if err := st.writeFrame(f); err != nil {
			return err
		}
	}
}

// announce records the user's presence before the headers go out (see
// Options.Announce).
func (st *stream) announce() error {
	if st.h.o.Announce == nil {
		return nil
	}
	octx, ocancel := st.opContext()
	defer ocancel()
	ctx, cancel := context.WithTimeout(octx, min(st.h.o.ReadTimeout, headsStoreBound))
	defer cancel()
	err := st.h.o.Announce(ctx, st.user)
	if err != nil && st.ctx.Err() == nil {
		st.h.log.Warn("record presence before the stream opens; the presence report retries", "user", st.user, "err", err)
	}
	// Even when it failed: it may have written the row all the same.
	st.h.work.announced(st.user)
	return err
}

// storeRetry is how soon a stream whose log read found the store down
// reads again.
const storeRetry = time.Second

// storeDown says whether a log read failed because the store cannot serve
// now (calls.ErrUnavailable), not because the read ran out of its time
// (Options.ReadTimeout: a stream that slow ends, as before) or the stream
// ended.
func storeDown(err error) bool {
	return errors.Is(err, calls.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// retryLater wakes the stream after storeRetry, to read the log again.
func (st *stream) retryLater() {
	st.h.m.storeRetries.Inc()
	if st.retrying.Swap(true) {
		return // one retry pending is enough
	}
	time.AfterFunc(storeRetry, func() {
		st.retrying.Store(false)
		st.sub.push(nil)
	})
}

// writeFrame writes f unless the stream is past it or it is for another
// device.
func (st *stream) writeFrame(f *frame) error {
	if f.id <= st.lastID {
		return nil
	}
	if st.h.neverGiven(st.lastID) {
		// The log was restored since the stream got there: what comes
		// now is the restored log's, under ids past a gap its client's
		// events are in. Written, the client would go on with the lost
		// events as if they held.
		_ = st.flush()
		return errRestoredBehind
	}
	st.setPosition(f.id)
	if !f.forDevice(st.device) {
		return nil
	}
	// Listed before the write: a frame that takes the buffer past flushAt
	// goes out with the flush its own write makes, and that flush reports
	// it. Listed after, it waited for a later flush (the next page of a
	// catch-up, read in turn), and a stream ending before one left an
	// invitation its client had without a report.
	invitation := f.typ == calls.EventReceived
	list := &st.invitations
	if st.unlisted {
		list = &st.replayed
	}
	if invitation {
		*list = append(*list, f)
	}
	if err := st.writeRaw(f.bytes); err != nil {
		if l := *list; invitation && len(l) > 0 && l[len(l)-1] == f {
			// Not (or not wholly) written: no later flush may report it.
			*list = l[:len(l)-1]
		}
		return err
	}
	m := st.h.m
	m.written.Inc()
	if !f.committed.IsZero() {
		m.lag.Observe(time.Since(f.committed).Seconds())
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
	// After the deadline is set: serve cuts the writes of a stream its
	// client left, and a deadline set just after must not undo that.
	if st.deserted() {
		return errGone
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

// resetOpening tells the client of a new (or reset) stream that ends
// before its synced event, its pending invitations unread (evicted at the
// per-user cap, see Hub.evictOldest, or the read failed or timed out), to
// re-sync: its client holds no position in the log (or an older one,
// about to be reset), and coming back as a new stream it would miss,
// without a word, what was committed since this one subscribed (its own
// callInvitationCreated, say). A reset makes that lossless as any reset
// is: the client reloads what it shows. Eviction cuts the opening's reads
// short, so that a user opening streams in a loop while reads are slow
// holds at most the cap's worth of them. Best effort: the write is bounded
// by the stream's write deadline.
func (st *stream) resetOpening() {
	if st.writeRaw(resetBlock) == nil {
		_ = st.flush()
	}
}

// interruptible lets Shutdown end the stream from now on (see open), its
// log reads included.
//
// Shutdown cancels the reads of the streams it finds interruptible (see
// Hub.Shutdown); one that ran before the flag was set is seen here
// instead. A context.AfterFunc on the hub's context did the same, at
// about 190 bytes of live heap per stream, with every interruptible stream
// registered on (and, ending, removed from) that one context under its
// lock.
func (st *stream) interruptible() {
	st.canStop = true
	st.sub.interruptible.Store(true)
	if st.h.ctx.Err() != nil {
		st.cancel()
	}
}

// flush pushes the written bytes to the client, then reports the
// invitations they carried as delivered.
func (st *stream) flush() error {
	if err := st.deadline(); err != nil {
		return err
	}
	if st.conn != nil {
		if len(st.buf) > 0 {
			// What went out only: a write cut short (the client
			// left, a deadline) counted whole made earlier bytes
			// still unacknowledged look acknowledged (a review).
			n, err := st.writeConn(st.buf)
			st.wrote(n)
			st.buf = nil // not kept: an idle stream holds no buffer
			if err != nil {
				return err
			}
		}
	} else if err := st.rc.Flush(); err != nil {
		return err
	}
	st.flushed(st.invitations)
	clear(st.invitations)
	st.invitations = st.invitations[:0]
	st.replayedOut = append(st.replayedOut, st.replayed...)
	clear(st.replayed)
	st.replayed = st.replayed[:0]
	return nil
}

// ended logs why a stream ended when that is worth knowing.
func (st *stream) ended(err error) {
	if err == nil || errors.Is(err, errShutdown) || errors.Is(err, errGone) || errors.Is(err, errEvicted) || errors.Is(err, errTokenExpired) || st.ctx.Err() != nil {
		return
	}
	st.h.log.Debug("event stream ended", "user", st.user, "device", st.device, "err", err)
}
