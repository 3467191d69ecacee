package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
)

// recoverPanics turns a panicking handler into a logged 500 problem, so
// one bad request never takes the process down. http.ErrAbortHandler is
// re-raised: it is net/http's way to abort a response on purpose.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := recorderFor(w)
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(p)
			}
			loggerFrom(r.Context()).Error("panic serving request",
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec.wroteHeader {
				// Too late for a problem document: cut the response short.
				panic(http.ErrAbortHandler)
			}
			writeError(rec, r, newError(codeInternal, "panic"))
		}()
		next.ServeHTTP(rec, r)
	})
}
