package sse

import "time"

// An invitation written to a hijacked connection counts as delivered once
// the client's TCP has acknowledged its bytes, not once they are in the
// socket: a phone that left its network sends no FIN or RST, and what the
// stream writes then sits in the socket's buffer. Counted at the write, the
// invitee showed received and the caller was never told notYetReceived (a
// review blackholed an invitee's network: received at once). So do the
// invitations a new or resuming stream replays from the log. Where the
// connection cannot tell (not Linux, or not hijacked; asked once, as the
// stream takes it over: stream.ackable), the write counts, as before. Only
// the nearest TCP peer acknowledges: behind a proxy that ends TCP, that is
// the proxy.

// ackState is a stream's invitations written but not acknowledged yet,
// allocated with the first of them and dropped once all are: an idle
// stream holds only the pointer.
type ackState struct {
	// sent counts the bytes written since the state was made; an
	// invitation's end is sent once its bytes were written. Bytes written
	// before it, and not acknowledged, only make the wait longer.
	sent int64
	list []unacked
	at   time.Time     // the next check
	wait time.Duration // between the last two checks
}

type unacked struct {
	f   *frame
	end int64
}

// Checks of the acknowledgements still awaited begin ackFirstCheck after
// the write and back off to ackMaxCheck: a client's ACK comes within its
// round trip, and a delayed ACK within some 40–200 ms.
const (
	ackFirstCheck = 5 * time.Millisecond
	ackMaxCheck   = 500 * time.Millisecond
)

// wrote counts n bytes written, for the invitations awaiting their ACK.
func (st *stream) wrote(n int) {
	if st.acks != nil {
		st.acks.sent += int64(n)
	}
}

// flushed reports fs, invitations whose bytes went out, as delivered: at
// once, or once acknowledged where the socket tells (ackable). Those
// already acknowledged are reported now.
func (st *stream) flushed(fs []*frame) {
	if !st.ackable {
		for _, f := range fs {
			st.h.work.delivered(f.id, f.callID, st.user, f.time)
		}
		return
	}
	if len(fs) == 0 {
		return
	}
	if st.acks == nil {
		// Counting from here, the flush that wrote these invitations
		// is not counted: their end is 0, and they are acknowledged
		// once nothing written is unacknowledged.
		st.acks = &ackState{}
	}
	for _, f := range fs {
		st.acks.list = append(st.acks.list, unacked{f: f, end: st.acks.sent})
	}
	st.acks.wait = 0
	st.checkAcks(time.Now())
}

// checkAcks reports the invitations whose bytes the client acknowledged,
// and arms the next check while some are not.
func (st *stream) checkAcks(now time.Time) {
	a := st.acks
	if a == nil {
		return
	}
	q, ok := st.h.o.unackedBytes(st.conn)
	if !ok {
		// The socket told before (ackable): closed since, as the
		// client left. What it had not acknowledged stays so.
		q = a.sent + 1
	}
	through := a.sent - q
	n := 0
	for _, u := range a.list {
		if u.end > through {
			break
		}
		st.h.work.delivered(u.f.id, u.f.callID, st.user, u.f.time)
		n++
	}
	if n == len(a.list) {
		st.acks = nil
		return
	}
	clear(a.list[:n])
	a.list = a.list[n:]
	a.wait = min(max(2*a.wait, ackFirstCheck), ackMaxCheck)
	a.at = now.Add(a.wait)
}
