package handlers

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"callsig/sse"
)

// rateLimiter is a token bucket per key (the user): rate tokens a second,
// at most burst saved up. Buckets that have refilled are dropped by a sweep
// that runs at most once a sweepEvery, inside allow, so no goroutine is
// needed and memory stays bounded by the users active in the last minute.
type rateLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

const sweepEvery = time.Minute

func newRateLimiter(rate float64, burst int, now func() time.Time) *rateLimiter {
	if burst <= 0 {
		burst = max(1, int(math.Ceil(rate)))
	}
	return &rateLimiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// allow takes a token for key, or says how long until one is available.
func (l *rateLimiter) allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// refund gives back a token allow took, for a request that turned out
// not to be what the bucket counts (see authenticator.spare).
func (l *rateLimiter) refund(key string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if b := l.buckets[key]; b != nil { // none: swept, being full
		b.refill(now, l.rate, l.burst)
		b.tokens = min(b.tokens+1, l.burst)
	}
}

// charge takes n more tokens from key's bucket, for a request that cost
// more than one (see bytesPerToken), and says how long until the bucket
// is back at zero. The bucket may go below zero, so the next requests
// wait, but not below -burst: one huge answer must not lock its user out
// for long.
func (l *rateLimiter) charge(key string, n float64) (owed time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.refill(now, l.rate, l.burst)
	b.tokens = max(b.tokens-n, -l.burst)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / l.rate * float64(time.Second))
}

func (b *bucket) refill(now time.Time, rate, burst float64) {
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(burst, b.tokens+elapsed*rate)
		b.last = now
	}
}

// sweep forgets full buckets: a new bucket starts full, so this changes
// nothing for their users.
func (l *rateLimiter) sweep(now time.Time) {
	for key, b := range l.buckets {
		b.refill(now, l.rate, l.burst)
		if b.tokens >= l.burst {
			delete(l.buckets, key)
		}
	}
	l.lastSweep = now
}

// middleware limits each authenticated user (it must run after auth), or
// each client address on unauthenticated routes.
func (l *rateLimiter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := clientKey(r)
		if ok, wait := l.allow(key); !ok {
			tooMany(w, r, wait, "rate limit exceeded")
			return
		}
		if r.URL.Path == eventsRoute {
			// A stream: bounded by the streams a user may hold. What it
			// replays from the log is charged by the bytes as it goes, as
			// an answer's body is, and waits when over (sse.Charge).
			next.ServeHTTP(w, r.WithContext(sse.WithCharge(r.Context(), func(n int) time.Duration {
				return l.charge(key, float64(n)/bytesPerToken)
			})))
			return
		}
		next.ServeHTTP(&countingWriter{ResponseWriter: w, l: l, key: key}, r)
	})
}

// bytesPerToken is how much of an answer one request's token pays for;
// each more costs another. A request is not what a user spends: a page
// of GET /calls may hold 100 calls of 10 users with their extendedData,
// megabytes to read and encode, and at one token each a user within the
// limit kept a core busy and every other user's requests waited (a review:
// p99 9 ms → 145 ms). By the bytes, a user's answers stay within the rate
// times bytesPerToken a second (3.2 MB/s at the default 50).
const bytesPerToken = 64 << 10

// countingWriter charges an answer's body to its user, a token for each
// bytesPerToken past the first. Each write is charged before it is made:
// charged once written, an answer its client never reads (a write blocked
// until the deadline, see writeDeadline) cost nothing meanwhile, and a
// user could have as many such answers pending as requests the rate let
// through (a review: 150 pages of 13 MB at once, within the limit).
type countingWriter struct {
	http.ResponseWriter
	n   int
	l   *rateLimiter
	key string
}

func (w *countingWriter) Write(b []byte) (int, error) {
	before := w.n / bytesPerToken
	w.n += len(b)
	if extra := w.n/bytesPerToken - before; extra > 0 {
		w.l.charge(w.key, float64(extra))
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the writer below.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// tooMany answers a request over a limit: 429 rate_limited with
// Retry-After, except the event stream's. EventSource gives up for good
// on any status but 200 (a browser's and the JavaScript client's login
// alike), and comes back after a stream that ends: the stream gets an
// empty one (sse.Refuse) whose retry is the wait, as at the connection
// cap.
func tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration, why string) {
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	if r.Method == http.MethodGet && r.URL.Path == eventsRoute {
		sse.Refuse(w, r, time.Duration(secs)*time.Second, why+"; reconnect later")
		return
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, r, newError(codeRateLimited, "%s, retry in %d s", why, secs))
}

// clientKey is the authenticated user, or "#anon:<address>" before auth.
func clientKey(r *http.Request) string {
	if info := infoFrom(r.Context()); info != nil && info.user != "" {
		return info.user
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "#anon:" + host
}
