package sse

import (
	"errors"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// This file holds the opening of hijacked streams: catching a stream up
// from the log before serve takes it over, a bounded number at a time.

// openArgs is what an opener needs of the request: its Last-Event-ID
// (see lastEventID) and the head the subscription returned.
type openArgs struct {
	last   int64
	resume bool
	head   int64
}

// writeProbe is how long an opening stream's write may block before the
// stream gives its opener slot to the next in the queue (see writeConn).
const writeProbe = 20 * time.Millisecond

// openers are the goroutines of one stage of opening hijacked streams, at
// most max at once, and the streams waiting for one; under Hub.omu.
type openers struct {
	max   int
	n     int
	queue []*stream
}

// startOpening has st opened on a goroutine of its own, at once if a slot
// of its stage is free, else once one frees (see releaseSlot). The stages:
// heads sends the headers of a stream whose headers wait for the store
// (announce, and with PerUserIDOrder the user's newest id: a one-row write
// and a primary-key lookup), then queues it for catchUps, which catches it
// up from the log (openOrEnd, then goLive). A stream whose head went out
// from its handler starts at catchUps.
//
// Why stages: a catch-up holds its slot while it waits for a turn to read
// the log (Options.LogReaders), and in a burst of reconnections every
// slot is soon held so. Headers queued behind those waited for other
// streams' catch-ups, where the contract has them sent at once; in their
// own stage they wait only for other streams' headers.
//
// Why a cap: openers read the log Options.LogReaders at a time, so in a
// burst of opens most of them wait. A waiting stream costs a slice entry
// in the queue, where a waiting goroutine costs its stack and its
// descriptor, which the runtime never frees. 15,000 streams opened 128 at
// a time had left thousands of openers waiting, and the heap the burst
// grew stayed with the process (docs/benchmarks.md).
//
// A slot is held for reading and writing, not for waiting on a client: a
// stream whose write blocks gives its slot up (writeConn) and finishes on
// its own goroutine, so clients that read slowly, or not at all, hold no
// one else's turn.
func (h *Hub) startOpening(st *stream) {
	o := &h.catchUps
	if !st.headSent {
		o = &h.heads
	}
	if !h.place(st, o, -1) {
		return
	}
	if st.queuedBeat.Load() != 0 {
		st.sub.poke() // serve reads its deadline again: the heartbeat's
	}
	select {
	case <-st.sub.evicted:
		// Evicted before it was queued: the eviction's poke found it
		// nowhere (see dequeueEvicted), and serve waits in a read. One
		// evicted from now on is poked by the eviction.
		st.sub.poke()
	default:
	}
}

// place has st opened at once if a slot of o is free, else queues it at
// index at (-1: last), and reports whether it queued it. A stream queued
// for a catch-up with its headers out gets its next heartbeat's time
// (see beatWhileQueued).
func (h *Hub) place(st *stream, o *openers, at int) (queued bool) {
	h.omu.Lock()
	if o.n < o.max {
		o.n++
		st.queuedBeat.Store(0)
		h.omu.Unlock()
		st.slot = o
		go st.runOpening()
		return false
	}
	if at < 0 || at > len(o.queue) {
		at = len(o.queue)
	}
	o.queue = slices.Insert(o.queue, at, st)
	if o == &h.catchUps && st.headSent && st.conn != nil {
		st.queuedBeat.Store(h.since() + int64(h.o.Heartbeat))
	}
	h.omu.Unlock()
	return true
}

// runOpening runs the stream's stage of opening and gives up its slot. A
// stream its client left before an opener got to it (see serve) is only
// ended.
func (st *stream) runOpening() {
	if !st.picked.CompareAndSwap(false, true) {
		st.end(errGone)
		st.h.streams.Done()
		st.releaseSlot()
		return
	}
	a := st.opening
	if !st.headSent {
		ok := st.openHead()
		st.releaseSlot()
		if !ok {
			return
		}
		// Up for the next stage, where serve may find it deserted or
		// evicted (picked again) as in this one. One whose client left
		// during this stage was left to this opener by serve (picked):
		// ended now, not once a catch-up slot frees, which a burst of
		// reconnections makes seconds away, its user online meanwhile.
		st.picked.Store(false)
		if st.state.Load() == deserted && st.picked.CompareAndSwap(false, true) {
			st.end(errGone)
			st.h.streams.Done()
			return
		}
		st.h.startOpening(st)
		return
	}
	ok := st.openOrEnd(a.last, a.resume, a.head)
	st.releaseSlot() // before goLive: from then on serve writes the stream
	if ok {
		st.goLive()
	}
}

// openHead is the heads stage (see startOpening): it records the user's
// presence, reads the user's newest id with PerUserIDOrder (see open),
// and sends the headers and the opening block. When that fails it ends the
// stream, gives up its goroutine's count in h.streams and returns false.
// The read takes no turn of the catch-ups' (read): it is one primary-key
// lookup, as the announce is one row's write, both bounded by the stage's
// slots.
//
// When the store fails the stage (a PostgreSQL gone silent: each write and
// read waits out its bound), the streams that come within
// headsStoreBackoff do not wait for the failed part again: a presence
// write is left to the presence report, which retries, as a failed one
// is; without its head a stream ends once its headers and opening block
// are out, and its client comes back after its retry. Before, each
// waited for its write and for a turn of the few head reads, each held
// for the whole bound, and the last of a dozen streams got its headers
// 35 s late.
func (st *stream) openHead() bool {
	h := st.h
	a := &st.opening
	if !h.silent(&h.presenceSilentUntil) {
		if err := st.announce(); err != nil && st.ctx.Err() == nil {
			h.presenceSilentUntil.Store(h.since() + int64(headsStoreBackoff))
		}
	}
	var err error
	if h.perUser() {
		if h.silent(&h.storeSilentUntil) {
			err = errStoreSilent
		} else if a.head, err = st.userHead(false); err != nil && st.ctx.Err() == nil && !errors.Is(err, errStoreSilent) {
			h.storeSilentUntil.Store(h.since() + int64(headsStoreBackoff))
		}
	}
	if serr := st.sendHead(a.last, a.resume); err == nil {
		err = serr
	}
	if err != nil {
		st.end(err)
		st.h.streams.Done()
		return false
	}
	return true
}

// headsStoreBackoff is how long after a heads-stage failure of the store
// the stage asks it nothing (see openHead); headsStoreBound bounds its
// write and read, a one-row write and a primary-key lookup, where a log
// read's bound (Options.ReadTimeout) is for pages.
const (
	headsStoreBackoff = 3 * time.Second
	headsStoreBound   = 2 * time.Second
)

// silent says whether a heads-stage part that failed is still let be
// (until, ns since the hub's epoch; see openHead).
func (h *Hub) silent(until *atomic.Int64) bool {
	u := until.Load()
	return u != 0 && h.since() < u
}

// since is the time since the hub's epoch, in ns; at turns such a time
// back into a time.Time that keeps its monotonic reading (a deadline).
func (h *Hub) since() int64 { return int64(time.Since(h.epoch)) }

func (h *Hub) at(ns int64) time.Time { return h.epoch.Add(time.Duration(ns)) }

// errStoreSilent ends a stream the heads stage opened without the store.
var errStoreSilent = errors.New("sse: the store failed a stream's opening moments ago")

// dequeueEvicted ends the stream, and reports so, when it was evicted
// (Hub.evictOldest) while it waited in an openers' queue. Eviction stops
// a stream's reads of the log, but one no opener has picked reads nothing
// yet: it stayed, connection and goroutine, until an opener got to it, so
// a user opening streams in a loop while the openers were busy held any
// number past Options.MaxStreamsPerUser. Taken out of the queue, it is
// nobody else's: it tells its client what its opening would have (the
// head, and a new stream's reset, see resetOpening) and ends, with the
// opening's count in h.streams. One an opener has picked is ended by it.
func (st *stream) dequeueEvicted() bool {
	select {
	case <-st.sub.evicted:
	default:
		return false
	}
	h := st.h
	h.omu.Lock()
	found := false
	for _, o := range []*openers{&h.heads, &h.catchUps} {
		if i := slices.Index(o.queue, st); i >= 0 {
			o.queue, found = slices.Delete(o.queue, i, i+1), true
		}
	}
	h.omu.Unlock()
	if !found || !st.picked.CompareAndSwap(false, true) {
		return false
	}
	a := st.opening
	err := error(nil)
	if !st.headSent {
		err = st.sendHead(a.last, a.resume)
	}
	if err == nil && !a.resume {
		st.resetOpening()
	}
	st.end(errEvicted)
	h.streams.Done()
	return true
}

// releaseSlot hands the stream's opener slot, if it holds one, to the
// oldest stream queued for that stage; with none queued the slot is free.
func (st *stream) releaseSlot() {
	o := st.slot
	if o == nil {
		return
	}
	st.slot = nil
	h := st.h
	h.omu.Lock()
	if len(o.queue) == 0 {
		o.n--
		o.queue = nil // let the queue go once empty
		h.omu.Unlock()
		return
	}
	next := o.queue[0]
	o.queue[0] = nil
	o.queue = o.queue[1:]
	next.queuedBeat.Store(0)
	h.omu.Unlock()
	next.slot = o
	go next.runOpening()
}

// beatWhileQueued writes a heartbeat for a stream waiting in the
// catch-ups' queue with its headers out, and reports whether the stream
// ended. That wait has no bound (a burst of reconnections, a slow store,
// every opener slot busy), and nobody wrote the stream meanwhile: it was
// silent past the contract's comment line every 15 s (a review). serve
// takes it out of the queue first, under omu, so no opener can take it
// while it writes, and puts it back at its place after, or starts it if a
// slot freed meanwhile.
func (st *stream) beatWhileQueued() bool {
	h := st.h
	o := &h.catchUps
	h.omu.Lock()
	i := slices.Index(o.queue, st)
	if i < 0 {
		h.omu.Unlock()
		return false // an opener has it, or an eviction took it out
	}
	o.queue = slices.Delete(o.queue, i, i+1)
	h.omu.Unlock()
	if err := st.beat(); err != nil {
		st.end(err)
		h.streams.Done() // the opening's count
		return true
	}
	h.place(st, o, i)
	return false
}

// writeConn writes b to the hijacked connection (flush has armed the
// write deadline), and returns how much of it went out: acknowledgements
// are counted against that (see acked.go). While the stream holds an
// opener slot it first gives the write writeProbe: a write still blocked
// then gives the slot up, and the rest goes out under the full deadline.
func (st *stream) writeConn(b []byte) (int, error) {
	if st.slot == nil {
		return st.conn.Write(b)
	}
	_ = st.conn.SetWriteDeadline(time.Now().Add(writeProbe))
	if st.deserted() { // as in stream.deadline
		return 0, errGone
	}
	n, err := st.conn.Write(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, err
	}
	st.releaseSlot()
	// The timeout may have been Shutdown's or an eviction's cut, not the
	// probe's: those end the stream, as they end its reads (an evicted
	// stream still opening ends, interruptible or not). Checked after the
	// deadline is armed again too: a cut in between must not be undone.
	if err := st.ctx.Err(); err != nil {
		return n, err
	}
	if err := st.deadline(); err != nil {
		return n, err
	}
	if err := st.ctx.Err(); err != nil {
		return n, err
	}
	m, err := st.conn.Write(b[n:])
	return n + m, err
}

// sendHead writes and flushes the response head and the opening block,
// with a first heartbeat event where the client asked for them: it tells
// the client at once that they will come, so it can watch the stream
// from its start (a connection that dies before the first interval would
// otherwise go unwatched).
func (st *stream) sendHead(last int64, resume bool) error {
	st.writeHeader()
	st.headSent = true
	st.nextBeat = time.Now().Add(st.h.o.Heartbeat) // for read, until goLive
	if err := st.writeRaw(openingBlock(st.h.o.Retry, last, resume && last >= 0)); err != nil {
		return err
	}
	if st.beatEvent {
		if err := st.writeRaw(heartbeatEventBlock); err != nil {
			return err
		}
	}
	return st.flush()
}
