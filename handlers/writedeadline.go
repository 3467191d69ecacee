package handlers

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAnswerTimeout bounds a request other than the event stream from
// its start to the last byte of its answer written to the connection:
// requestTimeout for the work, then 15 s to write the answer.
const DefaultAnswerTimeout = requestTimeout + 15*time.Second

// Answers follows the connections with a request in progress (ConnState,
// the http.Server's hook), so that a shutdown can bring their write
// deadlines forward (CutAt): an answer its client does not read then ends
// before the shutdown's own deadline. Without that, one such client made
// every shutdown wait its whole timeout and exit with an error. By
// connection, not by handler: net/http writes an answer of under 4 KiB
// after its handler has returned, so a registry of handlers missed the
// small answers, most of them (a review). The zero value is ready to use;
// its methods are safe for concurrent use.
type Answers struct {
	cut atomic.Int64 // Unix ns; 0: no shutdown yet
	mu  sync.Mutex
	// active holds each connection with a request in progress, and the
	// write deadline its request armed (zero: none yet).
	active map[net.Conn]time.Time
}

// ConnState is an http.Server's ConnState hook. A connection is followed
// while a request on it is in progress; idle, hijacked (an event stream:
// a shutdown ends those itself) or closed, it is not.
func (a *Answers) ConnState(c net.Conn, s http.ConnState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s != http.StateActive {
		delete(a.active, c)
		return
	}
	if a.active == nil {
		a.active = make(map[net.Conn]time.Time)
	}
	a.active[c] = time.Time{}
}

// armed records d, the write deadline a request armed on c.
func (a *Answers) armed(c net.Conn, d time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.active[c]; ok {
		a.active[c] = d
	}
}

// CutAt moves the write deadline of every connection with a request in
// progress, and of every request begun from now on, to at, if later than
// at: an earlier one stands (a review found it moved later).
func (a *Answers) CutAt(at time.Time) {
	a.cut.Store(at.UnixNano())
	a.mu.Lock()
	defer a.mu.Unlock()
	for c, d := range a.active {
		if d.IsZero() || d.After(at) {
			_ = c.SetWriteDeadline(at)
			a.active[c] = at
		}
	}
}

// arm sets the write deadline of a request's connection: d, or the cut if
// one came and is earlier.
func (a *Answers) arm(r *http.Request, rc *http.ResponseController, d time.Time) {
	cut := func() (time.Time, bool) {
		if n := a.cut.Load(); n != 0 && n < d.UnixNano() {
			return time.Unix(0, n), true
		}
		return time.Time{}, false
	}
	if at, ok := cut(); ok {
		d = at
	}
	// Not supported by a test's recorder: nothing to bound there.
	_ = rc.SetWriteDeadline(d)
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		a.armed(c, d)
	}
	// A cut between the two reads set this connection's deadline, which
	// the line above may have moved back: set it again.
	if at, ok := cut(); ok && at.Before(d) {
		_ = rc.SetWriteDeadline(at)
	}
}

// connKey holds a request's connection in its context (ConnContext).
type connKey struct{}

// writeDeadline arms the connection's write deadline for each request, so
// a client that never reads its answers holds the answer's memory, its
// connection and a goroutine for at most timeout. The server has no
// WriteTimeout, which would end event streams; without this an answer
// blocked in a write waited as long as the client did (a review: 150
// unread 13 MB pages of GET /calls held 2.3 GB for minutes, and every
// shutdown waited its whole timeout for them). Routes that answer for
// longer lift it once the request is authenticated (noWriteDeadline), so
// an unauthenticated client's refusals are bounded too. net/http clears it
// once the answer is written, before the connection's next request.
func writeDeadline(answers *Answers, timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			answers.arm(r, http.NewResponseController(w), time.Now().Add(timeout))
			next.ServeHTTP(w, r)
		})
	}
}

// noWriteDeadline lifts writeDeadline's deadline: for the event stream,
// which arms its own before each write (and which a shutdown ends
// itself), and the admin's profiles, which take as many seconds as asked
// for before answering.
func noWriteDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		next.ServeHTTP(w, r)
	})
}
