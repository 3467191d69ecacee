package handlers

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// DefaultAnswerTimeout bounds a request other than the event stream from
// its start to the last byte of its answer written to the connection:
// requestTimeout for the work, then 15 s to write the answer.
const DefaultAnswerTimeout = requestTimeout + 15*time.Second

// Answers are the requests in progress whose answers have a write
// deadline (see writeDeadline). A shutdown brings their deadlines forward
// (CutAt), so that an answer its client does not read ends before the
// shutdown's own deadline: without that, one such client made every
// shutdown wait its whole timeout and exit with an error. The zero value
// is ready to use; its methods are safe for concurrent use.
type Answers struct {
	mu    sync.Mutex
	cut   time.Time // zero: no shutdown yet
	inUse map[*http.ResponseController]time.Time
}

// CutAt moves the write deadline of every answer in progress, and of every
// one begun from now on, to at (if later than at).
func (a *Answers) CutAt(at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cut = at
	for rc, d := range a.inUse {
		if d.After(at) {
			_ = rc.SetWriteDeadline(at)
			a.inUse[rc] = at
		}
	}
}

// begin arms rc's deadline at d, or at the cut if earlier, and keeps rc
// for CutAt until end.
func (a *Answers) begin(rc *http.ResponseController, d time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.cut.IsZero() && a.cut.Before(d) {
		d = a.cut
	}
	// Not supported by a test's recorder: nothing to bound there.
	_ = rc.SetWriteDeadline(d)
	if a.inUse == nil {
		a.inUse = make(map[*http.ResponseController]time.Time)
	}
	a.inUse[rc] = d
}

// end forgets rc.
func (a *Answers) end(rc *http.ResponseController) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inUse, rc)
}

// answer is a request's entry in Answers, in its context for
// noWriteDeadline.
type answer struct {
	of *Answers
	rc *http.ResponseController
}

type answerKey struct{}

// writeDeadline arms the connection's write deadline for each request, so
// a client that never reads its answers holds the answer's memory, its
// connection and a goroutine for at most timeout. The server has no
// WriteTimeout, which would end event streams; without this an answer
// blocked in a write waited as long as the client did (a review: 150
// unread 13 MB pages of GET /calls held 2.3 GB for minutes, and every
// shutdown waited its whole timeout for them). Routes that answer for
// longer clear it once the request is authenticated (noWriteDeadline), so
// an unauthenticated client's refusals are bounded too.
func writeDeadline(answers *Answers, timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == eventsRoute {
				// Bounded until authenticated (see noWriteDeadline), and
				// not kept: a shutdown ends streams itself, and whatever
				// this put in the request's context an idle stream would
				// hold for its life.
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout))
				next.ServeHTTP(w, r)
				return
			}
			rc := http.NewResponseController(w)
			answers.begin(rc, time.Now().Add(timeout))
			defer answers.end(rc)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), answerKey{}, answer{answers, rc})))
		})
	}
}

// noWriteDeadline lifts writeDeadline's deadline: for the event stream,
// which arms its own before each write (and which a shutdown ends
// itself), and the admin's profiles, which take as many seconds as asked
// for before answering.
func noWriteDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if an, ok := r.Context().Value(answerKey{}).(answer); ok {
			an.of.end(an.rc) // a shutdown's cut is not for it
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		next.ServeHTTP(w, r)
	})
}
