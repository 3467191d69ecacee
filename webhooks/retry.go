package webhooks

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Schedule is when each attempt is made, counted from the failure of the
// one before: the first at once, then after 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h and 10 h, eight attempts over about a day, as Standard Webhooks
// senders commonly do. After the last one the delivery is failed; an admin
// may still retry it by hand.
var Schedule = []time.Duration{
	0,
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
	10 * time.Hour,
}

// MaxRetryAfter caps how long a receiver's Retry-After may push an attempt.
const MaxRetryAfter = 24 * time.Hour

// Jitter spreads a retry delay so receivers recovering from an outage are
// not hit by every delivery at the same instant.
type Jitter func(d time.Duration) time.Duration

// TenPercent is the default Jitter: d ± up to 10 %.
func TenPercent(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	spread := int64(d / 10)
	return d + time.Duration(rand.Int64N(2*spread+1)-spread)
}

// NoJitter keeps delays exact (tests).
func NoJitter(d time.Duration) time.Duration { return d }

// nextDelay returns the delay before the next attempt after `attempts`
// attempts failed, and false when none is left.
func nextDelay(attempts int, jitter Jitter, retryAfter time.Duration) (time.Duration, bool) {
	if attempts >= len(Schedule) {
		return 0, false
	}
	d := jitter(Schedule[attempts])
	if retryAfter > d {
		d = min(retryAfter, MaxRetryAfter)
	}
	return d, true
}

// parseRetryAfter reads a Retry-After header, in delay-seconds or as an
// HTTP date (relative to now); 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
