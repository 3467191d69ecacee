package sse

// This file holds a subscriber's buffer: the frames handed to its stream
// and not yet written, and the signal that wakes the stream for them.

// push buffers f for the stream and signals it; nil only wakes it (to read
// the log, say). It reports false, having buffered nothing, when f finds
// the buffer full (Options.Buffer frames).
//
// A slice, not a channel: an idle stream's is nil, where a channel's buffer
// stays allocated for the stream's life; and a hijacked stream is woken by
// a poke rather than a channel receive (see serve).
func (s *subscriber) push(f *frame) bool {
	s.qmu.Lock()
	if f == nil {
		s.woken = true
	} else if len(s.queue) >= s.limit {
		s.qmu.Unlock()
		return false
	} else {
		s.queue = append(s.queue, f)
	}
	s.qmu.Unlock()
	s.signal()
	return true
}

// signal wakes the stream: serve by a poke, run through its channel.
func (s *subscriber) signal() {
	if s.conn != nil {
		s.poke()
		return
	}
	select {
	case s.ch <- struct{}{}:
	default: // a signal is pending anyway
	}
}

// due reports, and clears, whether the stream was signalled with frames
// buffered or a wake-up.
func (s *subscriber) due() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	d := s.woken || len(s.queue) > 0
	s.woken = false
	return d
}

// drop lets the buffered frames go (the stream will read them from the
// log).
func (s *subscriber) drop() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	clear(s.queue)
	s.queue = nil
}

// pop takes the oldest buffered frame (nil: none). The buffer is let go
// once empty.
func (s *subscriber) pop() *frame {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		s.queue = nil
		return nil
	}
	f := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = nil
	}
	return f
}
