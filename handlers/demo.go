package handlers

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// demoRoute is where the browser demo (package web) lives.
const demoRoute = "/demo/"

// mountDemo serves the demo page, outside authentication and validation: it
// is static, and signs in by itself through POST /dev/token.
func mountDemo(r chi.Router, demo http.Handler) {
	if demo == nil {
		return
	}
	r.Get("/demo", func(w http.ResponseWriter, r *http.Request) {
		target := demoRoute
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
	})
	r.Get(demoRoute+"*", func(w http.ResponseWriter, r *http.Request) {
		nw := &notFoundWriter{ResponseWriter: w}
		demo.ServeHTTP(nw, r)
		if nw.notFound {
			writeError(w, r, newError(codeNotFound, "no such resource: %s", r.URL.Path))
		}
	})
}

// notFoundWriter holds back a 404 from the demo handler, so that an unknown
// file answers with the API's problem+json like every other unknown path.
type notFoundWriter struct {
	http.ResponseWriter
	notFound bool
}

func (w *notFoundWriter) WriteHeader(code int) {
	if code == http.StatusNotFound {
		w.notFound = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *notFoundWriter) Write(p []byte) (int, error) {
	if w.notFound {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *notFoundWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
