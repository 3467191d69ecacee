package sse

import (
	"errors"
	"os"
	"sync/atomic"
	"time"

	"callsig/calls"
)

// This file holds the one goroutine a hijacked stream lives on (serve).

// The states of a hijacked stream (stream.state).
const (
	opening  int32 = iota // the opening goroutine writes (see ServeEvents)
	live                  // serve's goroutine writes
	deserted              // the client left before the stream went live
)

// aLongTimeAgo is a read deadline already past: setting it wakes serve.
var aLongTimeAgo = time.Unix(1, 0)

// serve is the goroutine of a hijacked stream for its whole life. It reads
// the connection, where a client sends nothing after its request, and so
// sees the client leave as soon as the kernel does. Whatever else it has to
// do wakes it from that read by moving the read deadline into the past
// (subscriber.poke): an event buffered for it, a wake-up to read the log,
// eviction, shutdown, the token's timers; the deadline it sets itself is
// the next heartbeat. Parked in a read, it needs no select (whose waiters,
// one per case, stay allocated while it waits), no ticker and no second
// goroutine to watch the connection: see docs/benchmarks.md for what that
// saves per idle stream. The writes run on fresh stacks (onFreshStack), so
// its own stays at the smallest size.
//
// Until the opening goroutine hands over (goLive), serve only reads: when
// the client leaves it closes the connection, which cuts a write short,
// and cancels the stream's context, which ends a read of the log; the
// opening goroutine then fails and ends the stream.
func (st *stream) serve() {
	defer st.h.streams.Done()
	b := make([]byte, 16)
	for {
		isLive := st.state.Load() == live
		var at time.Time // before going live: no deadline, but while queued (beatWhileQueued)
		if isLive {
			at = st.wakeAt()
		} else if q := st.queuedBeat.Load(); q != 0 {
			at = st.h.at(q)
		}
		// The deadline before the checks: a poke from now on, after a
		// check found nothing to do, makes the read return at once.
		_ = st.conn.SetReadDeadline(at)
		if !isLive && st.state.Load() == live {
			continue // went live between the two loads; its poke may be lost
		}
		if !isLive && st.dequeueEvicted() {
			return
		}
		if isLive {
			worked, err := st.step()
			if err != nil {
				st.end(err)
				return
			}
			if worked {
				continue
			}
		}
		n, err := st.conn.Read(b)
		if st.clientSent += n; st.clientSent > maxClientBytes {
			err = errClientSent
		}
		if !isLive && !at.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(at) {
			if st.beatWhileQueued() {
				return
			}
			continue
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		// The client left (or the stream closed the connection).
		if st.state.CompareAndSwap(opening, deserted) {
			st.cancel()
			if st.picked.CompareAndSwap(false, true) {
				// No opener has it (it may wait in the queue): gone
				// from the hub now, not once one gets to it, so the
				// user may go offline and it takes no place of the
				// user's streams. The opener that gets to it only
				// ends it.
				st.close()
				st.h.unsubscribe(st.sub)
			} else {
				// One that has it already (announcing presence,
				// writing the opening) ends it itself, after its
				// work: its writes are cut short now (and fail from
				// now on, see deserted), and its end, the socket
				// still open, reads what the client acknowledged
				// before the close. Closed here, that read failed,
				// and invitations a healthy client had acknowledged
				// went unreported (a review).
				_ = st.conn.SetWriteDeadline(aLongTimeAgo)
				// Its work stops at the cancel, unless a store
				// ignores its context: the socket, and the
				// connection's place under the cap, are then freed
				// after what one read of the log may take anyway.
				time.AfterFunc(st.h.o.ReadTimeout, st.close)
			}
			if st.h.o.onDeserted != nil {
				st.h.o.onDeserted()
			}
			return
		}
		if errors.Is(err, errClientSent) {
			st.end(err)
			return
		}
		st.end(errGone)
		return
	}
}

// deserted reports whether the client of the stream, still opening, left
// (see serve); if so it cuts the connection's writes short again, after
// whatever deadline the caller just set.
func (st *stream) deserted() bool {
	if st.conn == nil || st.state.Load() != deserted {
		return false
	}
	_ = st.conn.SetWriteDeadline(aLongTimeAgo)
	return true
}

// maxClientBytes is how much a client may send on its stream's connection
// after its request, which an EventSource never does: a body sent with the
// GET, which nothing reads, at most. More ends the stream as a client that
// left would, or a client writing into it could make the server read it,
// 16 bytes a system call, for as long as it liked, at every other user's
// expense.
const maxClientBytes = 1024

// goLive hands a hijacked stream over to serve once it is open, and gives
// up the opening goroutine's count in h.streams. If the client left
// meanwhile, serve is gone, and the stream ends here.
func (st *stream) goLive() {
	defer st.h.streams.Done()
	st.nextBeat = time.Now().Add(st.h.o.Heartbeat)
	if !st.state.CompareAndSwap(opening, live) {
		st.end(errGone)
		return
	}
	st.sub.poke()
}

// step does what serve was woken for, if anything: it reports an error to
// end the stream with, or whether it wrote.
func (st *stream) step() (worked bool, err error) {
	select {
	case <-st.h.done:
		return false, errShutdown
	case <-st.sub.evicted:
		return false, errEvicted
	default:
	}
	if err := st.ctx.Err(); err != nil {
		return false, err
	}
	if st.token.byDeadline {
		now := time.Now()
		st.token.expired.Store(!now.Before(st.expires))
		st.token.warn.Store(!now.Before(st.expires.Add(-TokenWarning)))
	}
	if warn, err := st.tokenDue(); err != nil {
		return false, err
	} else if warn {
		return true, onFreshStack(st.writeWarning)
	}
	if st.acks != nil && !time.Now().Before(st.acks.at) {
		st.checkAcks(time.Now())
	}
	if !time.Now().Before(st.nextBeat) {
		return true, onFreshStack(st.beat)
	}
	if st.sub.due() {
		return true, onFreshStack(st.writeBatch)
	}
	return false, nil
}

// tokenState is a stream's token expiry: two timers set the flags and wake
// the stream (see armToken). A hijacked stream on the system clock has no
// timers: serve's read deadline stands for them (see wakeAt), which saves
// two timers per stream.
type tokenState struct {
	warn, expired atomic.Bool
	warned        bool
	timers        [2]calls.Timer
	byDeadline    bool
}

// wakeAt is serve's read deadline: the next heartbeat, or the token's
// warning or end when sooner and told by the read deadline.
func (st *stream) wakeAt() time.Time {
	at := st.nextBeat
	if st.acks != nil && st.acks.at.Before(at) {
		at = st.acks.at
	}
	if st.token.byDeadline {
		due := st.expires
		if !st.token.warned {
			due = due.Add(-TokenWarning)
		}
		if due.Before(at) {
			at = due
		}
	}
	return at
}

// armToken arms the token's timers, left being what the token has (0: no
// limit): the warning TokenWarning before exp (at once when less is left),
// and the end at exp. Armed as the stream subscribes, before its client
// can see it open, and from left rather than from a second reading of the
// clock: a test's clock moved on in between would delay them by as much.
// A timer sets its flag and wakes the stream (see tokenDue); a hijacked
// stream on the system clock needs no timers, its read deadline stands
// for them (see wakeAt).
func (st *stream) armToken(left time.Duration) {
	if left <= 0 {
		return
	}
	clock := st.h.o.Clock
	if _, ok := clock.(calls.SystemClock); ok && st.conn != nil {
		st.token.byDeadline = true
		return
	}
	st.token.timers[0] = clock.AfterFunc(left-TokenWarning, func() {
		st.token.warn.Store(true)
		st.sub.signal()
	})
	st.token.timers[1] = clock.AfterFunc(left, func() {
		st.token.expired.Store(true)
		st.sub.signal()
	})
}

// tokenDue reports errTokenExpired once the token has ended, else whether
// the warning is due and not yet sent (it is then taken as sent).
func (st *stream) tokenDue() (warn bool, err error) {
	if st.tokenPast() {
		return false, errTokenExpired
	}
	if st.token.warn.Load() && !st.token.warned {
		st.token.warned = true
		return true, nil
	}
	return false, nil
}

// disarmToken stops the token's timers, if armed.
func (st *stream) disarmToken() {
	for _, t := range st.token.timers {
		if t != nil {
			t.Stop()
		}
	}
}

// poke wakes a hijacked stream's serve from its read; other streams
// select on what changed, and need nothing more.
func (s *subscriber) poke() {
	if s.conn != nil {
		_ = s.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// tokenPast reports whether the token has ended: told by its timer (or a
// hijacked stream's read deadline), or by the clock. Those count the time
// elapsed since the opening, and exp is a wall-clock time: after the wall
// clock stepped forward past it (NTP, a VM resumed), they would keep a
// stream open on an expired token for as long as the step, every request
// with that token refused meanwhile. Asked at every wake-up, heartbeats
// included, so such a stream ends within a heartbeat.
func (st *stream) tokenPast() bool {
	if st.token.expired.Load() {
		return true
	}
	if !st.expires.IsZero() && !st.h.o.Clock.Now().Before(st.expires.Round(0)) {
		st.token.expired.Store(true)
		return true
	}
	return false
}
