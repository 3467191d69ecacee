package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"callsig/internal/pgtest"

	"github.com/jackc/pgx/v5"
)

func TestClusterFlags(t *testing.T) {
	const pg = "postgres://postgres@127.0.0.1:5432/x"
	ok := []struct {
		args  []string
		nodes int
	}{
		{[]string{"-spawn", "cycle"}, 1}, // the single SQLite server, as before
		{[]string{"-spawn", "-nodes", "3", "-postgres", pg, "-nats", "nats://127.0.0.1:4222", "cycle"}, 3},
		{[]string{"-spawn", "-postgres", pg, "-postgres-fresh", "streams"}, 1},
		{[]string{"-spawn", "-nodes", "2", "-postgres", pg, "deadlines"}, 2},
		{[]string{"-urls", "http://a:1, http://b:2,http://c:3", "cycle"}, 3},
		{[]string{"-urls", "http://a:1,http://b:2", "-nodes", "2", "deadlines"}, 2},
		{[]string{"-url", "http://a:1", "soak"}, 1},
	}
	for _, c := range ok {
		cfg, err := parseFlags(c.args, io.Discard)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if cfg.nodes != c.nodes {
			t.Errorf("%q: %d nodes, want %d", c.args, cfg.nodes, c.nodes)
		}
	}
	if cfg, _ := parseFlags([]string{"-spawn", "cycle"}, io.Discard); cfg.cluster() {
		t.Error("a plain -spawn run counts as a cluster run: its output would change")
	}

	bad := []struct {
		args []string
		want string // in the error
	}{
		{[]string{"-spawn", "-nodes", "2", "cycle"}, "needs -postgres"},
		{[]string{"-spawn", "-nats", "nats://127.0.0.1:4222", "cycle"}, "-nats needs -postgres"},
		{[]string{"-spawn", "-postgres", "/tmp/x.db", "cycle"}, "postgres://"},
		{[]string{"-spawn", "-postgres-fresh", "cycle"}, "needs -postgres"},
		{[]string{"-postgres", pg, "cycle"}, "(-spawn)"},
		{[]string{"-nodes", "3", "cycle"}, "-urls"},
		{[]string{"-spawn", "-urls", "http://a:1", "cycle"}, "-urls"},
		{[]string{"-urls", "http://a:1,http://b:2", "-nodes", "3", "cycle"}, "-nodes 3 but 2"},
		{[]string{"-spawn", "-nodes", "-1", "cycle"}, "at least 1"},
		{[]string{"-spawn", "-nodes", "2", "-postgres", pg, "streams"}, "one node"},
		{[]string{"-urls", "http://a:1,http://b:2", "soak"}, "one node"},
	}
	for _, c := range bad {
		_, err := parseFlags(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}

// TestPairRoute checks that every timed delivery crosses nodes: the request
// that makes an event never goes to the node holding the stream that reads
// it, and the streams are spread evenly.
func TestPairRoute(t *testing.T) {
	if r := pairRoute(5, 1); r != (route{}) {
		t.Errorf("one node: %+v, want everything on node 0", r)
	}
	for n := 2; n <= 5; n++ {
		held := make([]int, n)
		for k := range 10 * n {
			r := pairRoute(k, n)
			held[r.streams]++
			if r.invite == r.streams || r.accept == r.streams {
				t.Errorf("n=%d pair %d: %+v: a request goes to its streams' node", n, k, r)
			}
			if n >= 3 && r.invite == r.accept {
				t.Errorf("n=%d pair %d: %+v: want three different nodes (stream, invite, accept)", n, k, r)
			}
			for _, i := range []int{r.streams, r.invite, r.accept} {
				if i < 0 || i >= n {
					t.Fatalf("n=%d pair %d: %+v: node out of range", n, k, r)
				}
			}
		}
		for i, h := range held {
			if h != 10 {
				t.Errorf("n=%d: node %d holds %d pairs' streams, want 10", n, i, h)
			}
		}
	}
}

// TestFreshDatabase creates and drops a database the way -postgres-fresh
// does.
func TestFreshDatabase(t *testing.T) {
	ctx := context.Background()
	dsn, drop, err := freshDatabase(ctx, pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	_, name, _ := strings.Cut(databaseName(dsn), "/")
	if !strings.HasPrefix(name, "callsig_load_") || !strings.Contains(dsn, "sslmode=disable") {
		t.Errorf("fresh database %s (%s): want callsig_load_<random>, the admin URL's options kept", name, dsn)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		_ = drop(ctx)
		t.Fatalf("connect to the fresh database: %v", err)
	}
	conn.Close(ctx) // a session left open would not keep it anyway (FORCE)
	if err := drop(ctx); err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s still there after drop (%d, %v)", name, n, err)
	}
}

// TestLoadgenPostgres runs the cycle briefly against one spawned node on a
// PostgreSQL database of its own: the cluster spawn path (DSN, node id and
// secret in the node's environment) works end to end. Two cycles at most
// (one pair); every one must complete.
func TestLoadgenPostgres(t *testing.T) {
	bin := serverBinary(t)
	dsn := pgtest.NewDatabase(t)
	fig := runLoadgen(t, "-spawn", "-server-bin", bin, "-server-log-level", "warn", "-postgres", dsn, "-nodes", "1",
		"cycle", "-duration", "1s", "-users", "2", "-event-timeout", "20s")
	started, completed := fig["cycles_started"].(float64), fig["cycles_completed"].(float64)
	if completed == 0 || completed != started {
		t.Errorf("cycles: %v started, %v completed; want all completed", started, completed)
	}
	wantZero(t, fig, "errors", "lost_events", "bad_events", "server_log_errors")
	if fig["backend"] != "postgres" || fig["node_count"] != 1.0 {
		t.Errorf("backend %v, node_count %v; want postgres, 1", fig["backend"], fig["node_count"])
	}
	nodes, _ := fig["per_node"].([]any)
	if len(nodes) != 1 {
		t.Fatalf("per_node = %v, want one node", fig["per_node"])
	}
	if c := nodes[0].(map[string]any)["cycles_completed"]; c != completed {
		t.Errorf("node 0 completed %v cycles, the run %v", c, completed)
	}
}
