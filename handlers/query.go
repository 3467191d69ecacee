package handlers

import (
	"net/http"
	"net/url"
)

// wellFormedQuery refuses a query string that does not parse (a stray
// "%", an escape like "%zz", a ";" separator) with 400. net/http's
// Request.URL.Query, which the validator and the handlers read, drops
// such pairs silently: "count=%zz" would list the default 20 calls, and
// "lastEventID=5%" would open a fresh stream with no replay, as if the
// client had sent nothing.
func wellFormedQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(w, r, invalidField("query", "malformed query string: %v", err))
			return
		}
		next.ServeHTTP(w, r)
	})
}
