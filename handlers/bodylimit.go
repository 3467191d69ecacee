package handlers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
)

// DefaultBodyLimit is the largest request body accepted when Deps.BodyLimit
// is zero. The largest request of the API is well under 16 KiB (nine
// invitees, extendedData of at most 2 KiB); what is read beyond that only
// costs memory in the validator (a flat 1 MiB body, the limit before,
// took 35 MB there).
const DefaultBodyLimit = 64 << 10

// bodyLimit reads the whole request body, refusing more than limit bytes
// with 413, and keeps it in memory: validation, idempotency fingerprints
// and decoding all need the same bytes, and our bodies are small. A body
// that stops arriving before the server's read timeout is 408.
func bodyLimit(limit int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit {
				refuseTooLarge(w, r, limit)
				return
			}
			var body []byte
			if r.Body != nil && r.Body != http.NoBody {
				var err error
				body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
				var mbe *http.MaxBytesError
				switch {
				case err == nil:
				case errors.As(err, &mbe):
					refuseTooLarge(w, r, limit)
					return
				case errors.Is(err, os.ErrDeadlineExceeded):
					// The server's ReadTimeout passed while the body trickled
					// in: the client was too slow, not wrong (RFC 9110 §15.5.9).
					w.Header().Set("Connection", "close")
					writeError(w, r, newError(codeRequestTimeout, "the request body did not arrive within the server's read timeout"))
					return
				default:
					writeError(w, r, newError(codeInvalidRequest, "reading the request body failed"))
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
