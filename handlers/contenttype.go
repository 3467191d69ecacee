package handlers

import (
	"mime"
	"net/http"
	"strings"
)

// requireJSON refuses a request body that is not declared as JSON with 415,
// and one whose strings are not valid UTF-8 with 400 (see invalidText).
// An empty body needs no Content-Type: accept, reject, join, quit, end and
// cancel have optional bodies, and a required one missing is a 400 that
// validation reports. Charset and other parameters are allowed.
func requireJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := requestBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if len(body) > 0 && !isJSON(r.Header.Get("Content-Type")) {
			writeError(w, r, newError(codeUnsupportedMediaType, "Content-Type must be application/json"))
			return
		}
		// The body is read as sent: a compressed one would be refused as
		// malformed JSON, and one labelled compressed but sent plain would
		// be read as if the label were absent. Either is 415 with
		// Accept-Encoding naming the only coding understood (RFC 9110,
		// 15.5.16).
		// The header is not repeated in the answer: it may be up to the
		// header limit long.
		if len(body) > 0 && !identityOnly(r.Header.Values("Content-Encoding")) {
			w.Header().Set("Accept-Encoding", "identity")
			writeError(w, r, newError(codeUnsupportedMediaType, "Content-Encoding is not supported: send the body uncompressed (identity)"))
			return
		}
		if field, bad := invalidText(body); bad {
			writeError(w, r, invalidField(field, "must be valid UTF-8 text (no invalid bytes, no unpaired surrogate escapes)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// identityOnly reports whether Content-Encoding values name no coding but
// identity.
func identityOnly(values []string) bool {
	for _, v := range values {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return false
			}
		}
	}
	return true
}

func isJSON(contentType string) bool {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}
