package sse

// This file holds the openers of hijacked streams: the goroutines that
// catch a stream up from the log before serve takes it over.

// openArgs is what an opener needs of the request: its Last-Event-ID
// (see lastEventID) and the head the subscription returned.
type openArgs struct {
	last   int64
	resume bool
	head   int64
}

// startOpening has st opened (openOrEnd, then goLive) by a new opener or,
// past Options.MaxOpeners, by the first to finish its stream.
//
// Why a cap: openers read the log Options.LogReaders at a time, so in a
// burst of opens most of them wait. A waiting stream costs a slice entry
// in the queue, where a waiting goroutine costs its stack and its
// descriptor, which the runtime never frees. 15,000 streams opened 128 at
// a time had left thousands of openers waiting, and the heap the burst
// grew stayed with the process (docs/benchmarks.md).
func (h *Hub) startOpening(st *stream) {
	h.omu.Lock()
	if h.openers < h.o.MaxOpeners {
		h.openers++
		h.omu.Unlock()
		go h.opener(st)
		return
	}
	h.oqueue = append(h.oqueue, st)
	h.omu.Unlock()
}

// opener opens st, then the queued streams, until none is left.
func (h *Hub) opener(st *stream) {
	for st != nil {
		a := st.opening
		if st.openOrEnd(st.user, a.last, a.resume, a.head) {
			st.goLive()
		}
		st = h.nextToOpen()
	}
}

// nextToOpen takes the oldest queued stream; with none, the opener ends
// (nil). The queue is let go once empty.
func (h *Hub) nextToOpen() *stream {
	h.omu.Lock()
	defer h.omu.Unlock()
	if len(h.oqueue) == 0 {
		h.oqueue = nil
		h.openers--
		return nil
	}
	st := h.oqueue[0]
	h.oqueue[0] = nil
	h.oqueue = h.oqueue[1:]
	return st
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
