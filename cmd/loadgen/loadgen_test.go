package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoadgen runs each mode briefly against a real spawned server, so the
// tool cannot rot. It checks that every cycle completed and no event was
// lost, never a speed: figures come from real runs, see docs/benchmarks.md.
func TestLoadgen(t *testing.T) {
	bin := serverBinary(t)
	spawn := []string{"-spawn", "-server-bin", bin, "-server-log-level", "warn"}

	t.Run("cycle", func(t *testing.T) {
		fig := runLoadgen(t, append(spawn, "cycle", "-duration", "2s", "-users", "20")...)
		started, completed := fig["cycles_started"].(float64), fig["cycles_completed"].(float64)
		if completed == 0 || completed != started {
			t.Errorf("cycles: %v started, %v completed; want all completed", started, completed)
		}
		wantZero(t, fig, "errors", "lost_events", "bad_events", "server_log_errors")
		for _, k := range []string{"cycles_per_sec", "delivery_p99_ms", "http_p99_ms", "peak_rss_bytes",
			"store_writes", "store_writes_per_commit", "store_write_ms_mean", "store_writer_busy_pct", "sched_latency_ms_mean"} {
			if v, _ := fig[k].(float64); v <= 0 {
				t.Errorf("%s = %v, want > 0", k, fig[k])
			}
		}
		// Each cycle is an invitation, its delivery mark and an accept.
		if w, _ := fig["store_writes"].(float64); w < 2*completed {
			t.Errorf("store_writes = %v for %v cycles, want at least two a cycle", w, completed)
		}
	})

	// Every event of the cycles reaches the receiver in loadgen, signed,
	// once each, and the outbox is empty when it reports.
	t.Run("cycle with a webhook", func(t *testing.T) {
		fig := runLoadgen(t, append(spawn, "-webhook", "-webhook-drain", "20s", "cycle", "-duration", "2s", "-users", "20")...)
		wantZero(t, fig, "errors", "lost_events", "webhooks_bad", "webhooks_duplicate", "webhook_backlog_left", "server_log_errors")
		// call.created, and call.user_state_changed for the invitee's
		// received and accepted: three messages a cycle.
		completed, got := fig["cycles_completed"].(float64), fig["webhooks_received"].(float64)
		if completed == 0 || got < 3*completed {
			t.Errorf("%v webhooks for %v cycles, want at least three a cycle", got, completed)
		}
		if _, ok := fig["webhook_lag_p99_ms"].(float64); !ok {
			t.Errorf("no webhook_lag_p99_ms in %v", fig)
		}
	})

	t.Run("streams", func(t *testing.T) {
		fig := runLoadgen(t, append(spawn, "streams", "-streams", "200", "-settle", "200ms")...)
		if fig["streams"] != 200.0 {
			t.Errorf("streams = %v, want 200", fig["streams"])
		}
		wantZero(t, fig, "stream_failures", "server_log_errors")
		for _, k := range []string{"bytes_per_stream", "open_time_ms"} {
			if _, ok := fig[k].(float64); !ok {
				t.Errorf("no %s in %v", k, fig)
			}
		}
	})

	t.Run("deadlines", func(t *testing.T) {
		fig := runLoadgen(t, append(spawn, "deadlines", "-invitations", "50", "-users", "10", "-timeout", "1s", "-restart")...)
		if fig["invitations"] != 50.0 || fig["timeouts_received"] != 50.0 {
			t.Errorf("%v invitations, %v timeouts received; want 50 and 50", fig["invitations"], fig["timeouts_received"])
		}
		wantZero(t, fig, "missing", "early", "errors", "bad_events", "duplicate_timeouts")
		if _, ok := fig["rearm_ms"].(float64); !ok {
			t.Errorf("no rearm_ms in %v", fig)
		}
	})

	// Seconds, not minutes: whether the trends are flat is for real runs
	// (docs/benchmarks.md); here the samples and slopes must be there.
	t.Run("soak", func(t *testing.T) {
		fig := runLoadgen(t, append(spawn, "-mode", "soak", "-duration", "3s", "-users", "10", "-churn", "5", "-rate", "20", "-sample-every", "500ms", "-warmup", "1s")...)
		wantZero(t, fig, "errors", "lost_events", "bad_events", "server_log_errors")
		if n, _ := fig["samples"].(float64); n < 4 {
			t.Errorf("samples = %v, want at least 4", fig["samples"])
		}
		if c, _ := fig["cycles_completed"].(float64); c < 20 {
			t.Errorf("cycles_completed = %v, want at least 20", fig["cycles_completed"])
		}
		slopes, _ := fig["slope_per_min"].(map[string]any)
		for _, g := range soakGauges {
			if _, ok := slopes[g.name].(float64); !ok {
				t.Errorf("no slope for %s in %v", g.name, fig["slope_per_min"])
			}
		}
	})
}

// built is the server binary the tests of this package share: building
// it takes longer than most of them.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
}

func serverBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "loadgen-test-*"); built.err == nil {
			built.bin, built.err = buildServer(context.Background(), built.dir)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// runLoadgen runs the tool in-process and returns its last line, the JSON
// figures.
func runLoadgen(t *testing.T, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("loadgen %s: %v\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	if testing.Verbose() {
		os.Stdout.Write(stdout.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var fig map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &fig); err != nil {
		t.Fatalf("last line is not the JSON figures: %v\n%s", err, stdout.Bytes())
	}
	return fig
}

func wantZero(t *testing.T, fig map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		v, ok := fig[k].(float64)
		if !ok || v != 0 {
			t.Errorf("%s = %v, want 0", k, fig[k])
		}
	}
}
