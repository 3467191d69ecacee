package handlers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync/atomic"
	"time"
)

// IdempotencyStore keeps Idempotency-Key records. It uses plain Go types so
// that package db implements it without importing handlers. Times are Unix
// milliseconds. A record's status is 0 while its first request is in flight.
type IdempotencyStore interface {
	// Reserve claims (scope, key) for a request with fingerprint, as in
	// flight until expiresAt, unless an unexpired record exists (an expired
	// one is replaced). It reports found=false when it claimed the key, or
	// found=true with the existing record.
	Reserve(ctx context.Context, scope, key, fingerprint string, now, expiresAt int64) (found bool, storedFingerprint string, status int, contentType string, body []byte, err error)
	// Complete stores the response of the in-flight record, kept until expiresAt.
	Complete(ctx context.Context, scope, key string, status int, contentType string, body []byte, expiresAt int64) error
	// Release forgets an in-flight record, so the key may be used again.
	Release(ctx context.Context, scope, key string) error
	// PruneIdempotency deletes the records expired at before; it returns how many.
	PruneIdempotency(ctx context.Context, before int64) (int64, error)
}

const (
	// idempotencyTTL is how long a response is replayed.
	idempotencyTTL = 24 * time.Hour
	// idempotencyLease bounds an in-flight record, so a request cut short by
	// a crash does not block its key for a whole day.
	idempotencyLease = 5 * time.Minute
	pruneEvery       = time.Hour
)

type idempotency struct {
	store     IdempotencyStore
	now       func() time.Time
	lastPrune atomic.Int64
}

// middleware makes a POST with Idempotency-Key happen at most once: the
// first request runs and its response (if not a 5xx) is stored; a repeat
// with the same key and the same method, path and body gets that response
// again with Idempotent-Replayed: true. The same key with another request is
// 422; while the first is still running it is 409. Keys are scoped by user
// and route, so users never see each other's keys. It runs after
// validation: a request refused by the schema consumes no key.
func (m *idempotency) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost || key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if len(key) > 255 {
			writeError(w, r, invalidField("Idempotency-Key", "must be 1–255 characters"))
			return
		}
		body, err := requestBody(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		ctx := context.WithoutCancel(r.Context()) // record the outcome even if the client left
		now := m.now()
		m.prune(ctx, now)
		scope := idempotencyScope(r)
		fp := fingerprint(r.Method, r.URL.Path, body)
		found, storedFP, status, ctype, stored, err := m.store.Reserve(ctx, scope, key, fp,
			now.UnixMilli(), now.Add(idempotencyLease).UnixMilli())
		switch {
		case err != nil:
			writeError(w, r, err)
			return
		case found && storedFP != fp:
			writeError(w, r, &httpError{code: codeIdempotencyConflict, status: http.StatusUnprocessableEntity,
				detail: "Idempotency-Key was used with another request"})
			return
		case found && status == 0:
			w.Header().Set("Retry-After", "1")
			writeError(w, r, newError(codeIdempotencyConflict, "a request with this Idempotency-Key is still in progress"))
			return
		case found:
			if ctype != "" {
				w.Header().Set("Content-Type", ctype)
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(status)
			_, _ = w.Write(stored)
			return
		}

		rec := &responseRecorder{ResponseWriter: w, body: &bytes.Buffer{}}
		completed := false
		defer func() {
			if !completed { // the handler panicked: let the key be retried
				if err := m.store.Release(ctx, scope, key); err != nil {
					loggerFrom(ctx).Error("releasing idempotency key", "err", err)
				}
			}
		}()
		next.ServeHTTP(rec, r)
		completed = true
		if rec.Status() >= 500 {
			err = m.store.Release(ctx, scope, key)
		} else {
			err = m.store.Complete(ctx, scope, key, rec.Status(), rec.Header().Get("Content-Type"),
				rec.body.Bytes(), m.now().Add(idempotencyTTL).UnixMilli())
		}
		if err != nil {
			loggerFrom(ctx).Error("recording idempotent response", "err", err)
		}
	})
}

// prune deletes expired records at most once per pruneEvery, on the
// request that notices it is due; Reserve replaces expired rows anyway, so
// this only bounds the table's size.
func (m *idempotency) prune(ctx context.Context, now time.Time) {
	last := m.lastPrune.Load()
	if now.UnixMilli()-last < pruneEvery.Milliseconds() || !m.lastPrune.CompareAndSwap(last, now.UnixMilli()) {
		return
	}
	if _, err := m.store.PruneIdempotency(ctx, now.UnixMilli()); err != nil {
		loggerFrom(ctx).Error("pruning idempotency keys", "err", err)
	}
}

// idempotencyScope is the user (the client's address for unauthenticated
// routes), the method and the route pattern.
func idempotencyScope(r *http.Request) string {
	return clientKey(r) + " " + r.Method + " " + routePattern(r)
}

// fingerprint identifies a request's content: same method, path and body.
func fingerprint(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}
