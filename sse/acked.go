package sse

import "time"

// An invitation written to a hijacked connection counts as delivered once
// the client's TCP has acknowledged its bytes, not once they are in the
// socket: a phone that left its network sends no FIN or RST, and what the
// stream writes then sits in the socket's buffer. Counted at the write, the
// invitee showed received and the caller was never told notYetReceived (a
// review blackholed an invitee's network: received at once, no push).
// Where the connection cannot tell (not Linux, or not hijacked), the write
// counts, as before.

// unacked is an invitation written but not acknowledged yet: end is the
// stream's byte count (stream.sent) once its bytes were written.
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

// awaitAcks takes the invitations just flushed, whose bytes end at
// st.sent, and reports those already acknowledged.
func (st *stream) awaitAcks() {
	for i, f := range st.invitations {
		st.unacked = append(st.unacked, unacked{f: f, end: st.sent})
		st.invitations[i] = nil
	}
	st.invitations = st.invitations[:0]
	st.ackWait = 0
	st.checkAcks(time.Now())
}

// checkAcks reports the invitations whose bytes the client acknowledged,
// and arms the next check (ackAt) while some are not.
func (st *stream) checkAcks(now time.Time) {
	if len(st.unacked) == 0 {
		return
	}
	through := st.sent
	if q, ok := st.h.o.unackedBytes(st.conn); ok {
		through -= q
	}
	n := 0
	for _, a := range st.unacked {
		if a.end > through {
			break
		}
		st.h.work.delivered(a.f.id, a.f.callID, st.user, a.f.time)
		n++
	}
	clear(st.unacked[:n])
	st.unacked = st.unacked[n:]
	if len(st.unacked) == 0 {
		st.unacked, st.ackAt, st.ackWait = nil, time.Time{}, 0
		return
	}
	st.ackWait = min(max(2*st.ackWait, ackFirstCheck), ackMaxCheck)
	st.ackAt = now.Add(st.ackWait)
}
