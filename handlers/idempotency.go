package handlers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"net/http"
	"time"
	"unicode/utf8"

	"callsig/calls"
)

// IdempotencyStore keeps Idempotency-Key records (db.Store). Records of
// requests that changed something are written by the use-case itself, in
// the transaction of the change (calls.Idempotency); this interface only
// serves the answers that changed nothing. Times are Unix
// milliseconds of the middleware's clock.
type IdempotencyStore interface {
	// LookupIdempotency returns the committed record under (scope, key),
	// nil when none is live at now.
	LookupIdempotency(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error)
	// PutIdempotency stores rec unless a live record holds its key, and
	// reports whether it did.
	PutIdempotency(ctx context.Context, rec calls.IdempotencyRecord) (bool, error)
}

// idempotencyTTL is how long a response is replayed.
const idempotencyTTL = 24 * time.Hour

// idempotency is the Idempotency-Key middleware. See middleware.
type idempotency struct {
	store IdempotencyStore
	now   func() time.Time
}

func newIdempotency(store IdempotencyStore, now func() time.Time) *idempotency {
	return &idempotency{store: store, now: now}
}

// idemRequest is what the middleware knows of a keyed request; a handler
// that records atomically turns it into a calls.Idempotency (intent).
type idemRequest struct {
	scope, key, fingerprint string
	also                    string // the fingerprint's older form (see fingerprint)
	now, expiresAt          int64
	intent                  *calls.Idempotency
}

type idemRequestKey struct{}

// middleware makes a POST with Idempotency-Key happen at most once. Keys
// are scoped by user and route, so users never see each other's keys; it
// runs after validation, so a request refused by the schema consumes no key.
//
//   - A handler that changes something (the call actions, the webhook admin
//     POSTs) is a recordsInTx: it passes the key down (idempotentContext) to
//     its use-case, which looks it up inside its write transaction. A record
//     of the same method, path and body is replayed (Idempotent-Replayed:
//     true), one of another request is 422; otherwise the use-case stores
//     its answer with its change, so a crash leaves either both or neither.
//     The store serializes writes, so concurrent requests with one key need
//     no wait. The middleware does not look the key up first: that second
//     lookup on every keyed request cost more than the replays it sped up
//     (docs/benchmarks.md).
//   - Any other handler runs only if the key holds no committed record, as
//     above (looked up first).
//   - An answer not recorded in a use-case's transaction and not a 5xx (a
//     refused request, which changed nothing) is stored afterwards in its
//     own transaction; if the key holds a record by then, that record
//     decides the answer instead. So the answer is held (heldResponse)
//     until the handler has returned.
//
// A 5xx or a panic stores nothing: the key may be retried.
func (m *idempotency) middleware(next http.Handler) http.Handler {
	_, inTx := next.(recordsInTx)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost || key == "" {
			next.ServeHTTP(w, r)
			return
		}
		// Characters, as the document's maxLength counts them; and text:
		// a browser sends a key typed with "é" as the single byte 0xE9,
		// which PostgreSQL's text column refuses (a 500 there, stored on
		// SQLite).
		if !utf8.ValidString(key) {
			writeError(w, r, invalidField("Idempotency-Key", "must be valid UTF-8 text"))
			return
		}
		if utf8.RuneCountInString(key) > 255 {
			writeError(w, r, invalidField("Idempotency-Key", "must be 1–255 characters"))
			return
		}
		body, err := requestBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		scope := idempotencyScope(r)
		now := m.now()
		fp, also := fingerprint(r.Method, r.URL.Path, requestDevice(r), body)
		req := &idemRequest{scope: scope, key: key, fingerprint: fp, also: also,
			now: now.UnixMilli(), expiresAt: now.Add(idempotencyTTL).UnixMilli()}
		if !inTx && m.replayed(w, r, req) {
			return
		}

		held := &heldResponse{header: http.Header{}}
		next.ServeHTTP(held, r.WithContext(context.WithValue(r.Context(), idemRequestKey{}, req)))
		// Nothing stored for a 5xx, nor for a client that gave up before
		// an answer (499): a retry with the key must run the request.
		if _, _, recorded := req.intent.Response(); recorded || held.Status() >= 500 || held.Status() == statusClientClosed {
			held.sendTo(w)
			return
		}
		// Record the outcome even if the client left meanwhile.
		ctx := context.WithoutCancel(r.Context())
		stored, err := m.store.PutIdempotency(ctx, calls.IdempotencyRecord{
			Scope: scope, Key: key, Fingerprint: req.fingerprint,
			Response:  calls.StoredResponse{Status: held.Status(), ContentType: held.header.Get("Content-Type"), Body: held.body.Bytes()},
			CreatedAt: req.now, ExpiresAt: req.expiresAt,
		})
		if err != nil {
			// An answer the key does not hold is never sent: a retry with
			// the key would act again and may answer otherwise (a refusal
			// after the call's past-due deadline fired, say: that commits
			// with the action, the refusal only here). 503: retry.
			loggerFrom(ctx).Error("recording idempotent response", "err", err)
			writeError(w, r, newError(codeUnavailable, "the answer could not be recorded under the Idempotency-Key; retry with the same key"))
			return
		}
		if !stored && m.replayed(w, r.WithContext(ctx), req) {
			return // the key was used before: that request's answer stands
		}
		held.sendTo(w)
	})
}

// replayed answers req from the committed record its key holds, if any:
// that record's answer, or 422 when it is another request's. It reports
// whether it answered.
func (m *idempotency) replayed(w http.ResponseWriter, r *http.Request, req *idemRequest) bool {
	rec, err := m.store.LookupIdempotency(r.Context(), req.scope, req.key, req.now)
	switch {
	case err != nil:
		writeError(w, r, err)
	case rec != nil && !(&calls.Idempotency{Fingerprint: req.fingerprint, Also: req.also}).Matches(rec.Fingerprint):
		writeError(w, r, idempotencyMismatch())
	case rec != nil:
		writeStored(w, rec.Response, true)
	default:
		return false
	}
	return true
}

// recordsInTx is a handler that records its Idempotency-Key in its
// use-case's write transaction (see middleware). Register it with
// chi's Method, which keeps the type; Post would convert it away.
type recordsInTx http.HandlerFunc

func (h recordsInTx) ServeHTTP(w http.ResponseWriter, r *http.Request) { h(w, r) }

// heldResponse keeps a keyed request's answer (status, headers, body) in
// memory until the middleware knows it is the one to send. The answers of
// POSTs are small JSON documents, never streamed.
type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header { return h.header }

func (h *heldResponse) WriteHeader(code int) {
	if h.status == 0 && code >= 200 {
		h.status = code
	}
}

func (h *heldResponse) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(p)
}

// Status is the status written, 200 when the handler wrote nothing.
func (h *heldResponse) Status() int {
	if h.status == 0 {
		return http.StatusOK
	}
	return h.status
}

// sendTo writes the held answer to w.
func (h *heldResponse) sendTo(w http.ResponseWriter) {
	maps.Copy(w.Header(), h.header)
	w.WriteHeader(h.Status())
	_, _ = w.Write(h.body.Bytes())
}

// idempotentContext returns the context to run a use-case in: when the
// request carries a key, it holds the calls.Idempotency that makes the
// use-case record (or replay) its answer, encoded as JSON with status.
func idempotentContext(r *http.Request, status int) (context.Context, *calls.Idempotency) {
	req, _ := r.Context().Value(idemRequestKey{}).(*idemRequest)
	if req == nil {
		return r.Context(), nil
	}
	req.intent = &calls.Idempotency{
		Scope: req.scope, Key: req.key, Fingerprint: req.fingerprint, Also: req.also, Now: req.now, ExpiresAt: req.expiresAt,
		Encode: func(result any) (calls.StoredResponse, error) { return encodeJSON(status, result) },
	}
	return calls.WithIdempotency(r.Context(), req.intent), req.intent
}

// respondIdempotent answers a use-case run in idempotentContext: the answer
// it recorded or replayed, else res or err as usual.
func respondIdempotent(w http.ResponseWriter, r *http.Request, intent *calls.Idempotency, status int, res any, err error) {
	if resp, replayed, ok := intent.Response(); ok && err == nil {
		writeStored(w, resp, replayed)
		return
	}
	if errors.Is(err, calls.ErrIdempotencyMismatch) {
		err = idempotencyMismatch()
	}
	respond(w, r, status, res, err)
}

// writeStored sends a recorded answer byte for byte, with the headers
// its kind was sent with (a problem's nosniff, as writeError sets it).
func writeStored(w http.ResponseWriter, resp calls.StoredResponse, replayed bool) {
	if resp.ContentType != "" {
		w.Header().Set("Content-Type", resp.ContentType)
	}
	if resp.ContentType == "application/problem+json" {
		w.Header().Set("X-Content-Type-Options", "nosniff")
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

func idempotencyMismatch() error {
	return &httpError{code: codeIdempotencyConflict, status: http.StatusUnprocessableEntity,
		detail: "Idempotency-Key was used with another request"}
}

// idempotencyScope is the user (the client's address for unauthenticated
// routes), the method and the route pattern.
func idempotencyScope(r *http.Request) string {
	return clientKey(r) + " " + r.Method + " " + routePattern(r)
}

// fingerprint identifies a request's content: same method, path, device
// and body. The device counts because it changes what an action does (it
// becomes the user's main device in the call): an accept retried from
// another device under the same key is another request, not a replay of
// the first device's answer. also is the form without the device, which
// versions before it stored: a record made by one still matches (a retry
// across the upgrade is replayed, never run again). A request without
// X-Device-ID is the default device's, with a form of its own: were it
// the older form, a retry of its key from another device would match
// it, and be told the default device's answer.
func fingerprint(method, path, device string, body []byte) (fp, also string) {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	legacy := hex.EncodeToString(h.Sum(nil))
	if device == "" {
		device = DefaultDevice
	}
	h.Write([]byte{0})
	h.Write([]byte(device))
	return hex.EncodeToString(h.Sum(nil)), legacy
}

// requestDevice is the device the request acts from ("" before
// authentication).
func requestDevice(r *http.Request) string {
	if info := infoFrom(r.Context()); info != nil {
		return info.device
	}
	return ""
}
