package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"callsig/calls"
	"callsig/db/sqlite"
)

var _ IdempotencyStore = (*sqlite.Store)(nil)

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "callsig.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// idemRouter mounts handler behind auth and the idempotency middleware on
// a chi route, as New does.
func idemRouter(t *testing.T, store IdempotencyStore, handler http.HandlerFunc) http.Handler {
	r := chi.NewRouter()
	r.With(newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(false), bodyLimit(1<<10), newIdempotency(store, time.Now).middleware).
		Post("/things/{id}", handler)
	return r
}

func idemPost(t *testing.T, h http.Handler, user, path, key, body string) *httptest.ResponseRecorder {
	hdr := authed(t, user)
	hdr["Idempotency-Key"] = key
	return do(h, req{method: "POST", path: path, body: body, header: hdr})
}

func TestIdempotencyReplay(t *testing.T) {
	var runs atomic.Int32
	h := idemRouter(t, openStore(t), func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"run":%d}`, n)
	})

	first := idemPost(t, h, "alice", "/things/1", "k1", `{"a":1}`)
	if first.Code != 201 || first.Body.String() != `{"run":1}` || first.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %s %v", first.Code, first.Body, first.Header())
	}
	again := idemPost(t, h, "alice", "/things/1", "k1", `{"a":1}`)
	if again.Code != 201 || again.Body.String() != `{"run":1}` || again.Header().Get("Idempotent-Replayed") != "true" ||
		again.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("replay: %d %s %v", again.Code, again.Body, again.Header())
	}
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times", runs.Load())
	}

	p := decodeProblem(t, idemPost(t, h, "alice", "/things/1", "k1", `{"a":2}`), 422, "idempotency_conflict")
	if !strings.Contains(p.Detail, "another request") {
		t.Fatalf("detail = %q", p.Detail)
	}
	decodeProblem(t, idemPost(t, h, "alice", "/things/2", "k1", `{"a":1}`), 422, "idempotency_conflict")

	// Keys are per user, and requests without a key are not deduplicated.
	if w := idemPost(t, h, "bob", "/things/1", "k1", `{"a":1}`); w.Code != 201 || w.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("bob: %d %v", w.Code, w.Header())
	}
	if w := idemPost(t, h, "alice", "/things/1", "", `{"a":1}`); w.Code != 201 || runs.Load() != 3 {
		t.Fatalf("no key: %d, runs %d", w.Code, runs.Load())
	}
	decodeProblem(t, idemPost(t, h, "alice", "/things/1", strings.Repeat("k", 256), `{}`), 400, "invalid_request")
}

func TestIdempotencyStoresClientErrors(t *testing.T) {
	var runs atomic.Int32
	h := idemRouter(t, openStore(t), func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		writeError(w, r, newError(codeForbidden, "no"))
	})
	idemPost(t, h, "alice", "/things/1", "k", `{}`)
	w := idemPost(t, h, "alice", "/things/1", "k", `{}`)
	decodeProblem(t, w, 403, "forbidden")
	if w.Header().Get("Idempotent-Replayed") != "true" || runs.Load() != 1 {
		t.Fatalf("4xx not replayed: runs %d, headers %v", runs.Load(), w.Header())
	}
}

// failingPuts is a store whose PutIdempotency fails while fail is set (its
// transaction's COMMIT failing: a full disk, the store out of reach).
type failingPuts struct {
	*sqlite.Store
	fail atomic.Bool
}

func (s *failingPuts) PutIdempotency(ctx context.Context, rec calls.IdempotencyRecord) (bool, error) {
	if s.fail.Load() {
		return false, fmt.Errorf("%w: commit failed", calls.ErrUnavailable)
	}
	return s.Store.PutIdempotency(ctx, rec)
}

// A refusal the middleware could not record under the key is not sent: a
// retry with the key would have acted again and could answer otherwise (a
// review: a 409 after a settled deadline, then 200 for the same key). It
// is a 503 to retry, and the retry's answer is recorded.
func TestIdempotencyUnrecordedRefusalIsNotSent(t *testing.T) {
	store := &failingPuts{Store: openStore(t)}
	var runs atomic.Int32
	h := idemRouter(t, store, func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		writeError(w, r, newError(codeForbidden, "no"))
	})
	store.fail.Store(true)
	w := idemPost(t, h, "alice", "/things/1", "k", `{}`)
	decodeProblem(t, w, 503, "unavailable")
	if w.Header().Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
	store.fail.Store(false)
	decodeProblem(t, idemPost(t, h, "alice", "/things/1", "k", `{}`), 403, "forbidden")
	if w := idemPost(t, h, "alice", "/things/1", "k", `{}`); w.Header().Get("Idempotent-Replayed") != "true" || runs.Load() != 2 {
		t.Fatalf("the retry's answer not recorded: runs %d, headers %v", runs.Load(), w.Header())
	}
}

func TestIdempotencyReleasesOnServerError(t *testing.T) {
	var runs atomic.Int32
	h := idemRouter(t, openStore(t), func(w http.ResponseWriter, r *http.Request) {
		switch runs.Add(1) {
		case 1:
			writeError(w, r, fmt.Errorf("transient"))
		case 2:
			panic("boom")
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	h = recoverPanics(h)
	decodeProblem(t, idemPost(t, h, "alice", "/things/1", "k", `{}`), 500, "internal")
	decodeProblem(t, idemPost(t, h, "alice", "/things/1", "k", `{}`), 500, "internal")
	if w := idemPost(t, h, "alice", "/things/1", "k", `{}`); w.Code != 200 || runs.Load() != 3 {
		t.Fatalf("after 5xx and panic the key was not released: %d, runs %d", w.Code, runs.Load())
	}
}

// A key belongs to the user and the operation (method and route), as the
// document says: on another route it is another key and acts; on the
// same route with another path it is another body (422).
func TestIdempotencyKeyIsPerOperation(t *testing.T) {
	var runs atomic.Int32
	handler := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, `{"run":%d}`, runs.Add(1)) }
	r := chi.NewRouter()
	r.With(newAuthenticator(AuthConfig{Secret: testSecret}).requireUser(false), bodyLimit(1<<10), newIdempotency(openStore(t), time.Now).middleware).
		Group(func(r chi.Router) {
			r.Post("/things/{id}/accept", handler)
			r.Post("/things/{id}/reject", handler)
		})
	if w := idemPost(t, r, "alice", "/things/1/accept", "k", `{}`); w.Body.String() != `{"run":1}` {
		t.Fatalf("accept: %d %s", w.Code, w.Body)
	}
	if w := idemPost(t, r, "alice", "/things/1/reject", "k", `{}`); w.Body.String() != `{"run":2}` || w.Header().Get("Idempotent-Replayed") != "" {
		t.Fatalf("the accept's key on reject: %d %s %v, want it run as a key of its own", w.Code, w.Body, w.Header())
	}
	decodeProblem(t, idemPost(t, r, "alice", "/things/2/accept", "k", `{}`), 422, "idempotency_conflict")
	if w := idemPost(t, r, "alice", "/things/1/reject", "k", `{}`); w.Body.String() != `{"run":2}` || w.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("reject again: %d %s, want the reject's answer replayed", w.Code, w.Body)
	}
}

func TestIdempotencyScope(t *testing.T) {
	r := httptest.NewRequest("POST", "/dev/token", nil)
	r.RemoteAddr = "192.0.2.7:5555"
	if got := idempotencyScope(r); got != "#anon:192.0.2.7 POST unmatched" {
		t.Fatalf("anonymous scope = %q", got)
	}
}

// A key is 1–255 characters, as the document's maxLength counts them, not
// bytes: a key of 255 "é" is 510 bytes and fits.
func TestIdempotencyKeyLength(t *testing.T) {
	h := idemRouter(t, openStore(t), func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	for _, tt := range []struct {
		name, key string
		ok        bool
	}{
		{"255 ASCII", strings.Repeat("k", 255), true},
		{"256 ASCII", strings.Repeat("k", 256), false},
		{"255 two-byte characters", strings.Repeat("é", 255), true},
		{"256 two-byte characters", strings.Repeat("é", 256), false},
		// What a browser sends for "été": ISO-8859-1 bytes, not UTF-8.
		// PostgreSQL's text column refused it (a 500).
		{"not UTF-8", "\xe9t\xe9", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := idemPost(t, h, "alice", "/things/1", tt.key, `{}`)
			if tt.ok && w.Code != http.StatusCreated {
				t.Fatalf("status %d, want 201: %s", w.Code, w.Body)
			}
			if !tt.ok {
				decodeProblem(t, w, http.StatusBadRequest, "invalid_request")
			}
		})
	}
}

// The fingerprint tells devices apart, and keeps, as its second form, the
// one versions before it computed, so that a record they stored still
// matches a retry after an upgrade.
func TestFingerprintCoversTheDevice(t *testing.T) {
	body := []byte(`{"extendedData":"x"}`)
	none, noneAlso := fingerprint("POST", "/calls/c/accept", "", body)
	def, defAlso := fingerprint("POST", "/calls/c/accept", DefaultDevice, body)
	phone, phoneAlso := fingerprint("POST", "/calls/c/accept", "phone", body)
	tablet, tabletAlso := fingerprint("POST", "/calls/c/accept", "tablet", body)
	// The form without a device is the one versions before it stored.
	h := sha256.Sum256([]byte("POST\x00/calls/c/accept\x00" + string(body)))
	legacy := hex.EncodeToString(h[:])
	switch {
	case none != def || noneAlso != defAlso:
		t.Errorf("no device and the default device differ: %s %q, %s %q", none, noneAlso, def, defAlso)
	case phone == tablet || phone == none || none == legacy:
		t.Errorf("devices not told apart: phone %s, tablet %s, default %s, older form %s", phone, tablet, none, legacy)
	case noneAlso != legacy || phoneAlso != legacy || tabletAlso != legacy:
		t.Errorf("older forms %s / %s / %s, want the form without a device %s", noneAlso, phoneAlso, tabletAlso, legacy)
	}
	// A key first used without X-Device-ID, retried from another device,
	// is another request (it matched the older form, and was replayed).
	if (&calls.Idempotency{Fingerprint: phone, Also: phoneAlso}).Matches(none) {
		t.Errorf("the default device's record matches a retry from the phone")
	}
	if !(&calls.Idempotency{Fingerprint: phone, Also: phoneAlso}).Matches(legacy) || !(&calls.Idempotency{Fingerprint: none, Also: noneAlso}).Matches(legacy) {
		t.Errorf("a record stored before the upgrade no longer matches")
	}
}

type cancelKey struct{}

// A request whose client gave up before its answer (a 499: the store
// skipped it, say) leaves nothing under its key: the client's retry with
// the key runs, where it was answered the stored 499 for a day.
func TestIdempotencyStoresNothingForAClientThatLeft(t *testing.T) {
	var runs atomic.Int32
	h := idemRouter(t, openStore(t), func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			r.Context().Value(cancelKey{}).(context.CancelFunc)() // the client leaves
			writeError(w, r, fmt.Errorf("skipped in the writer's queue: %w", r.Context().Err()))
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	send := func(ctx context.Context) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/things/1", strings.NewReader(`{"a":1}`)).WithContext(ctx)
		r.Header.Set("Content-Type", "application/json")
		for k, v := range authed(t, "alice") {
			r.Header.Set(k, v)
		}
		r.Header.Set("Idempotency-Key", "k1")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	ctx, cancel := context.WithCancel(context.Background())
	if w := send(context.WithValue(ctx, cancelKey{}, cancel)); w.Code != statusClientClosed {
		t.Fatalf("the request the client left: %d, want %d", w.Code, statusClientClosed)
	}
	if w := send(context.Background()); w.Code != http.StatusCreated || runs.Load() != 2 {
		t.Fatalf("the retry got %d (replayed %q, handler ran %d times), want it run: 201",
			w.Code, w.Header().Get("Idempotent-Replayed"), runs.Load())
	}
}
