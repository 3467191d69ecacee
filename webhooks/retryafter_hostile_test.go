package webhooks

import (
	"math"
	"testing"
	"time"
)

// Hostile Retry-After values give a next attempt between the schedule's
// delay and MaxRetryAfter, and never overflow Unix ms.
func TestRetryAfterHostileValues(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, v := range []string{"-5", "0", "-0", "+30", "1e12", "1000000000000", "9223372036854775807",
		"99999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT",
		"garbage", " 60 ", "60.5", "\x00", "Mon, 02 Jan 2006 15:04:05 MST"} {
		ra := parseRetryAfter(v, now)
		for attempts := 1; attempts < len(Schedule); attempts++ {
			d, ok := nextDelay(attempts, TenPercent, ra)
			if !ok || d < 0 || d > max(MaxRetryAfter, Schedule[attempts]*11/10) {
				t.Errorf("Retry-After %q after %d attempts: delay %s %v", v, attempts, d, ok)
			}
			at := now.Add(d).UnixMilli()
			if at <= now.UnixMilli()-1 || at > now.Add(25*time.Hour).UnixMilli() || at == math.MinInt64 {
				t.Errorf("Retry-After %q: next at %d", v, at)
			}
		}
	}
}
