package e2e

import (
	"net/http"
	"strings"
	"testing"

	"callsig/internal/testkit"
)

// Health, readiness, the spec and Prometheus metrics are served without a
// token; metrics count requests by route pattern and calls by state.
func TestSystemEndpoints(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	anon := s.Client("anon")
	anon.Token = ""
	anon.Get("/healthz").Want(http.StatusOK)
	anon.Get("/readyz").Want(http.StatusOK)
	// HEAD, as some health checkers send it: the status, no body.
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := anon.Do(http.MethodHead, path, nil).Want(http.StatusOK); len(r.Body) != 0 {
			t.Errorf("HEAD %s: a body of %d bytes", path, len(r.Body))
		}
	}
	if spec := anon.Get("/openapi.yaml").Want(http.StatusOK); !strings.Contains(string(spec.Body), "openapi: 3.0.3") {
		t.Fatalf("spec body starts %q", spec.Body[:40])
	}

	alice := s.Client("alice")
	id := alice.Invite(nil, "bob", "carol").CallID
	s.Client("bob").Action(id, "reject", nil).Want(http.StatusOK)
	ended := alice.Invite(nil, "dave").CallID
	s.Client("dave").Action(ended, "accept", nil).Want(http.StatusOK)

	metrics := string(anon.Get("/metrics").Want(http.StatusOK).Body)
	for _, want := range []string{
		`callsig_calls{state="started"} 1`,
		`callsig_calls{state="ended"} 1`,
		`callsig_http_requests_total{method="POST",route="/calls",status="201"} 2`,
		`route="/calls/{callID}/reject"`,
		`callsig_http_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, id) {
		t.Errorf("metrics leak a raw path with a callID")
	}
	// The Go scheduler's latency, beside the store's own figures: the
	// requests above ran goroutines, so it has counted waits.
	if n := scrapeMetric(t, s, "callsig_sched_latency_seconds_count"); n <= 0 {
		t.Errorf("callsig_sched_latency_seconds_count = %v, want more than 0", n)
	}
	if sum := scrapeMetric(t, s, "callsig_sched_latency_seconds_sum"); sum <= 0 {
		t.Errorf("callsig_sched_latency_seconds_sum = %v", sum)
	}
	// The SQLite writer's totals: the four actions above and their
	// delivery marks were written, each durable before its answer.
	if s.Backend == testkit.SQLite {
		for _, name := range []string{"callsig_store_writes_total", "callsig_store_commits_total", "callsig_store_wal_syncs_total",
			"callsig_store_write_seconds_total", "callsig_store_writer_busy_seconds_total", "callsig_store_wal_sync_seconds_total"} {
			if v := scrapeMetric(t, s, name); v <= 0 {
				t.Errorf("%s = %v, want more than 0", name, v)
			}
		}
		if w := scrapeMetric(t, s, "callsig_store_writes_total"); w < 4 {
			t.Errorf("callsig_store_writes_total = %v, want at least the 4 actions", w)
		}
		// The reject and the accept change calls the writer has just
		// written: both come from its cache.
		if h := scrapeMetric(t, s, "callsig_store_call_cache_hits_total"); h < 2 {
			t.Errorf("callsig_store_call_cache_hits_total = %v, want at least the reject and the accept", h)
		}
		for _, name := range []string{"callsig_store_call_cache_misses_total", "callsig_store_batch_replays_total"} {
			if !strings.Contains(metrics, name) {
				t.Errorf("metrics lack %s", name)
			}
		}
		// The WAL's writes went through the writer's VFS, gathered (the
		// e2e tests share a process: these count every server's).
		if w, c := scrapeMetric(t, s, "callsig_store_wal_writes_total"), scrapeMetric(t, s, "callsig_store_wal_write_calls_total"); w <= 0 || c <= 0 || c >= w {
			t.Errorf("callsig_store_wal_writes_total = %v, callsig_store_wal_write_calls_total = %v: want both above 0, the calls fewer", w, c)
		}
		// Nothing failed after writing: no group commit was run twice.
		if r := scrapeMetric(t, s, "callsig_store_batch_replays_total"); r != 0 {
			t.Errorf("callsig_store_batch_replays_total = %v, want 0", r)
		}
		// The hub learns of each event once, from the store as it becomes
		// durable, before the request is answered. Were the service to
		// report the commits too (after the store, before its answer),
		// each of those reports would come late, below the hub's head.
		if !strings.Contains(metrics, "callsig_sse_events_late_total") {
			t.Errorf("metrics lack callsig_sse_events_late_total")
		}
		if n := scrapeMetric(t, s, "callsig_sse_events_late_total"); n != 0 {
			t.Errorf("callsig_sse_events_late_total = %v, want 0: events reported to the hub twice or after a gap", n)
		}
	}
}

// The profiler is there for admins and nobody else.
func TestPprofNeedsAdmin(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	user := s.Client("alice")
	user.SkipSpec = true // /debug/pprof is operational, not part of the API contract
	user.Get("/debug/pprof/").WantProblem(http.StatusForbidden, "forbidden")
	admin := s.Admin()
	admin.SkipSpec = true
	if res := admin.Get("/debug/pprof/goroutine?debug=1").Want(http.StatusOK); !strings.Contains(string(res.Body), "goroutine profile") {
		t.Fatalf("goroutine profile: %.100s", res.Body)
	}
	// An unknown profile is a 404 like any other: problem+json.
	admin.Get("/debug/pprof/bogus").WantProblem(http.StatusNotFound, "not_found")
}

// Every connection pool's database/sql statistics are on /metrics, named
// by pool: the writer and the read pool on SQLite, the store's and the
// presence's pools on PostgreSQL.
func TestPoolMetrics(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		backend testkit.Backend
		pools   []string
	}{
		{testkit.SQLite, []string{"sqlite_write", "sqlite_read"}},
		{testkit.Postgres, []string{"postgres", "postgres_presence"}},
	} {
		t.Run(tt.backend.String(), func(t *testing.T) {
			s := testkit.Start(t, testkit.WithBackend(tt.backend))
			s.Client("alice").Invite(nil, "bob")
			anon := s.Client("anon")
			anon.Token = ""
			metrics := string(anon.Get("/metrics").Want(http.StatusOK).Body)
			for _, pool := range tt.pools {
				for _, series := range []string{"go_sql_open_connections", "go_sql_wait_count_total"} {
					if want := series + `{db_name="` + pool + `"}`; !strings.Contains(metrics, want) {
						t.Errorf("metrics lack %s", want)
					}
				}
			}
		})
	}
}
