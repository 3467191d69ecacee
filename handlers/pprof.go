package handlers

import (
	"net/http"
	"net/http/pprof"
	runtimepprof "runtime/pprof"

	"github.com/go-chi/chi/v5"
)

// mountPprof serves Go's profiler under /debug/pprof/ for admins only: it
// is how a slow production server is profiled (go tool pprof
// -http=: 'http://host/debug/pprof/profile?seconds=20' with the admin
// token as a bearer header). Not behind the REST timeout: a CPU profile
// runs as long as it is asked to.
//
// No /cmdline: it printed the process's arguments, -jwt-secret,
// -admin-token and a -db password among them, to anyone holding a JWT
// with role "admin" (webhook administration), who could then sign tokens
// for every user. go tool pprof does not need it.
func (s *server) mountPprof(r chi.Router) {
	r.Route("/debug/pprof", func(r chi.Router) {
		r.Use(s.auth.requireAdmin, noWriteDeadline)
		r.Get("/", pprof.Index)
		r.Get("/profile", pprof.Profile)
		r.Get("/symbol", pprof.Symbol)
		r.Get("/trace", pprof.Trace)
		r.Get("/{name}", func(w http.ResponseWriter, req *http.Request) {
			name := chi.URLParam(req, "name")
			// pprof's own answer to an unknown profile is text/plain.
			// cmdline is no profile: this never serves it.
			if runtimepprof.Lookup(name) == nil {
				writeError(w, req, newError(codeNotFound, "no such profile: %s", name))
				return
			}
			pprof.Handler(name).ServeHTTP(w, req)
		})
	})
}
