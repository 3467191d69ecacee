package handlers

import "net/http"

// singleHeaders are the headers that say who acts, from which device and
// under which key: each may be given once.
var singleHeaders = []string{"Authorization", "X-Device-ID", "Idempotency-Key"}

// oneEach refuses a request that gives one of singleHeaders more than
// once (400). The server read the first and a proxy in front of it may
// read the last: a request authenticated as one user, or keyed one way,
// by the one and acted on as another by the other (a review found them
// accepted).
func oneEach(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, name := range singleHeaders {
			if len(r.Header.Values(name)) > 1 {
				writeError(w, r, invalidField(name, "must be given once"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
