package webhooks

import (
	"net/http"
	"testing"
	"time"
)

func TestRetrySchedule(t *testing.T) {
	want := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	for i, w := range want {
		got, ok := nextDelay(i+1, NoJitter, 0)
		if !ok || got != w {
			t.Errorf("after %d failed attempts: %s %v, want %s", i+1, got, ok, w)
		}
	}
	if _, ok := nextDelay(8, NoJitter, 0); ok {
		t.Error("a ninth attempt was scheduled")
	}
	if got, _ := nextDelay(1, NoJitter, time.Minute); got != time.Minute {
		t.Errorf("Retry-After 1m after the first failure: %s", got)
	}
	if got, _ := nextDelay(2, NoJitter, time.Minute); got != 5*time.Minute {
		t.Errorf("a shorter Retry-After shortened the schedule: %s", got)
	}
	if got, _ := nextDelay(1, NoJitter, 1000*time.Hour); got != MaxRetryAfter {
		t.Errorf("Retry-After not capped: %s", got)
	}
}

func TestTenPercentJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := TenPercent(time.Hour)
		if d < 54*time.Minute || d > 66*time.Minute {
			t.Fatalf("jittered hour %s", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays: not much jitter", len(seen))
	}
	if TenPercent(0) != 0 {
		t.Fatal("jittered the immediate attempt")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":            0,
		"120":         2 * time.Minute,
		" 7 ":         7 * time.Second,
		"0":           0,
		"-5":          0,
		"soon":        0,
		"99999999999": MaxRetryAfter,
		now.Add(time.Hour).Format(http.TimeFormat):  time.Hour,
		now.Add(-time.Hour).Format(http.TimeFormat): 0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q = %s, want %s", v, got, want)
		}
	}
}
