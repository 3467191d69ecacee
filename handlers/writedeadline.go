package handlers

import (
	"net/http"
	"time"
)

// DefaultAnswerTimeout bounds a request other than the event stream from
// its start to the last byte of its answer written to the connection:
// requestTimeout for the work, then 15 s to write the answer.
const DefaultAnswerTimeout = requestTimeout + 15*time.Second

// writeDeadline arms the connection's write deadline for each request, so
// a client that never reads its answers holds the answer's memory, its
// connection and a goroutine for at most timeout. The server has no
// WriteTimeout, which would end event streams; without this an answer
// blocked in a write waited as long as the client did (a review: 150
// unread 13 MB pages of GET /calls held 2.3 GB for minutes, and every
// shutdown waited its whole timeout for them). Routes that answer for
// longer clear it once the request is authenticated (noWriteDeadline), so
// an unauthenticated client's refusals are bounded too.
func writeDeadline(timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Not supported by a test's recorder: nothing to bound there.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout))
			next.ServeHTTP(w, r)
		})
	}
}

// noWriteDeadline clears writeDeadline's deadline: for the event stream,
// which arms its own before each write, and the admin's profiles, which
// take as many seconds as asked for before answering.
func noWriteDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		next.ServeHTTP(w, r)
	})
}
