package sse

import (
	"errors"
	"os"
	"slices"
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

// startOpening has st opened (openOrEnd, then goLive) on a goroutine of its
// own, at once if fewer than Options.MaxOpeners are opening, else once a
// slot frees (see releaseSlot).
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
	h.omu.Lock()
	if h.openers < h.o.MaxOpeners {
		h.openers++
		h.omu.Unlock()
		st.slotted = true
		go st.runOpening()
		return
	}
	h.oqueue = append(h.oqueue, st)
	h.omu.Unlock()
}

// runOpening opens the stream and gives up its slot. A stream its client
// left before an opener got to it (see serve) is only ended.
func (st *stream) runOpening() {
	if !st.picked.CompareAndSwap(false, true) {
		st.end(errGone)
		st.h.streams.Done()
		st.releaseSlot()
		return
	}
	a := st.opening
	ok := st.openOrEnd(a.last, a.resume, a.head)
	st.releaseSlot() // before goLive: from then on serve writes the stream
	if ok {
		st.goLive()
	}
}

// dequeueEvicted ends the stream, and reports so, when it was evicted
// (Hub.evictOldest) while it waited in the openers' queue. Eviction stops
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
	i := slices.Index(h.oqueue, st)
	if i >= 0 {
		h.oqueue = slices.Delete(h.oqueue, i, i+1)
	}
	h.omu.Unlock()
	if i < 0 || !st.picked.CompareAndSwap(false, true) {
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
// oldest queued stream; with none queued the slot is free.
func (st *stream) releaseSlot() {
	if !st.slotted {
		return
	}
	st.slotted = false
	h := st.h
	h.omu.Lock()
	if len(h.oqueue) == 0 {
		h.openers--
		h.oqueue = nil // let the queue go once empty
		h.omu.Unlock()
		return
	}
	next := h.oqueue[0]
	h.oqueue[0] = nil
	h.oqueue = h.oqueue[1:]
	h.omu.Unlock()
	next.slotted = true
	go next.runOpening()
}

// writeConn writes b to the hijacked connection (flush has armed the write
// deadline). While the stream holds an opener slot it first gives the
// write writeProbe: a write still blocked then gives the slot up, and the
// rest goes out under the full deadline.
func (st *stream) writeConn(b []byte) error {
	if !st.slotted {
		_, err := st.conn.Write(b)
		return err
	}
	_ = st.conn.SetWriteDeadline(time.Now().Add(writeProbe))
	n, err := st.conn.Write(b)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	st.releaseSlot()
	// The timeout may have been Shutdown's or an eviction's cut, not the
	// probe's: those end the stream, as they end its reads (an evicted
	// stream still opening ends, interruptible or not). Checked after the
	// deadline is armed again too: a cut in between must not be undone.
	if err := st.ctx.Err(); err != nil {
		return err
	}
	if err := st.deadline(); err != nil {
		return err
	}
	if err := st.ctx.Err(); err != nil {
		return err
	}
	_, err = st.conn.Write(b[n:])
	return err
}

// sendHead writes and flushes the response head and the opening block.
func (st *stream) sendHead(last int64, resume bool) error {
	st.writeHeader()
	st.headSent = true
	if err := st.writeRaw(openingBlock(st.h.o.Retry, last, resume && last >= 0)); err != nil {
		return err
	}
	return st.flush()
}
