package handlers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
)

// DefaultBodyLimit is the largest request body accepted when Deps.BodyLimit
// is zero.
const DefaultBodyLimit = 1 << 20

// bodyLimit reads the whole request body, refusing more than limit bytes
// with 413, and keeps it in memory: validation, idempotency fingerprints
// and decoding all need the same bytes, and our bodies are small.
func bodyLimit(limit int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit {
				writeError(w, r, &http.MaxBytesError{Limit: limit})
				return
			}
			var body []byte
			if r.Body != nil && r.Body != http.NoBody {
				var err error
				body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
				if err != nil {
					var mbe *http.MaxBytesError
					if !errors.As(err, &mbe) {
						err = newError(codeInvalidRequest, "reading the request body failed")
					}
					writeError(w, r, err)
					return
				}
			}
			r = r.WithContext(context.WithValue(r.Context(), bodyKey, body))
			setBody(r, body)
			next.ServeHTTP(w, r)
		})
	}
}

// setBody makes body the request's body again, for the next reader.
func setBody(r *http.Request, body []byte) {
	r.ContentLength = int64(len(body))
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// requestBody returns the body bodyLimit kept, or reads (and puts back) the
// body when bodyLimit did not run.
func requestBody(r *http.Request) ([]byte, error) {
	if body, ok := r.Context().Value(bodyKey).([]byte); ok {
		return body, nil
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	setBody(r, body)
	return body, nil
}
