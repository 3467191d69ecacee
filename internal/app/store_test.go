package app

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The cluster settings are checked at startup with clear errors that never
// repeat a password: NATS without PostgreSQL has nobody to wake, and a
// PostgreSQL DSN without a configured secret would give each node its own
// development secret (and put it in a file named after the URL). Refused
// by the configuration (cmd/api serve and token) and by New for a Config
// built by hand, before anything is created.
func TestClusterSettingsAreCheckedAtStartup(t *testing.T) {
	noenv := func(string) string { return "" }
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"nats with sqlite", []string{"-db", "x.db", "-nats-url", "nats://127.0.0.1:4222", "-jwt-secret", strings.Repeat("k", 32)}, "nats-url needs a PostgreSQL db"},
		{"postgres without secret", []string{"-db", "postgres://callsig:s3cret@127.0.0.1:5432/callsig"}, "needs jwt-secret"},
		{"postgresql without secret", []string{"-db", "postgresql://callsig:s3cret@localhost/callsig?sslmode=disable"}, "needs jwt-secret"},
		{"bad node id", []string{"-node-id", "a b"}, "node-id"},
		{"lease too long", []string{"-presence-lease", "2m"}, "presence-lease"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("test", tc.args, noenv, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig %v: %v, want an error saying %q", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}

	dir := t.TempDir()
	t.Chdir(dir)
	cfg := Defaults()
	cfg.DB = "postgres://callsig:s3cret@127.0.0.1:5432/callsig"
	a, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		a.Close()
		t.Fatal("New started on PostgreSQL without a secret")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the error shows the password: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("New created %v", entries)
	}
}

// A node gets a random id when given none, and keeps a given one.
func TestNodeID(t *testing.T) {
	noenv := func(string) string { return "" }
	a, err := ParseConfig("test", []string{"-db", filepath.Join(t.TempDir(), "x.db")}, noenv, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseConfig("test", []string{"-db", filepath.Join(t.TempDir(), "x.db")}, noenv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.NodeID, "node-") || a.NodeID == b.NodeID {
		t.Errorf("random node ids %q and %q", a.NodeID, b.NodeID)
	}
	c, err := ParseConfig("test", nil, func(k string) string {
		if k == "CALLSIG_NODE_ID" {
			return "eu-1"
		}
		return ""
	}, nil)
	if err != nil || c.NodeID != "eu-1" {
		t.Errorf("CALLSIG_NODE_ID=eu-1: %q, %v", c.NodeID, err)
	}
}

// A password in the query of a postgres:// URL (?password=, which pgx
// takes) was logged as it was in "callsig listening": only the one of
// user:password@ was redacted.
func TestRedactedDBHidesQueryPasswords(t *testing.T) {
	for _, dsn := range []string{
		"postgres://callsig:s3cret@127.0.0.1:5432/callsig",
		"postgres://callsig@127.0.0.1:5432/callsig?password=s3cret",
		"postgresql://callsig@db/callsig?sslmode=require&PASSWORD=s3cret",
		"postgres://callsig@db/callsig?sslpassword=s3cret&sslkey=/k",
	} {
		if got := RedactedDB(dsn); strings.Contains(got, "s3cret") || !strings.Contains(got, "xxxxx") {
			t.Errorf("RedactedDB(%q) = %q", dsn, got)
		}
	}
	if got := RedactedDB("postgres://callsig@db/callsig?sslmode=disable"); got != "postgres://callsig@db/callsig?sslmode=disable" {
		t.Errorf("a URL without a password changed: %q", got)
	}
}

// A database setting meant for PostgreSQL but not spelled as a lower-case
// postgres:// URL was taken for a SQLite path: a libpq key=value string
// started a one-node SQLite server on a file named after it (password
// included, and logged), POSTGRES:// failed quoting the password.
func TestConnectionStringThatIsNoPostgresURLIsRefused(t *testing.T) {
	noenv := func(string) string { return "" }
	for _, db := range []string{
		"host=127.0.0.1 user=postgres password=s3cret dbname=callsig",
		"dbname=callsig password=s3cret",
		"POSTGRES://postgres:s3cret@127.0.0.1:5432/callsig",
		"Postgresql://postgres:s3cret@db/callsig",
		"pgsql://postgres:s3cret@db/callsig",
	} {
		_, err := ParseConfig("test", []string{"-db", db, "-jwt-secret", strings.Repeat("k", 32)}, noenv, nil)
		if err == nil || !strings.Contains(err.Error(), "postgres://") {
			t.Errorf("-db %q: %v, want a refusal naming postgres://", db, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("-db %q: the error shows the password: %v", db, err)
		}
	}
	for _, db := range []string{"callsig.db", "/var/lib/callsig/callsig.db", "./data/host=a/callsig.db", ":memory:"} {
		if _, err := ParseConfig("test", []string{"-db", db}, noenv, nil); err != nil {
			t.Errorf("-db %q (a SQLite path): %v", db, err)
		}
	}
}

// A PostgreSQL database out of reach at the start says so, with the
// cause, not the text an HTTP client gets for a 503 ("overloaded, busy or
// shutting down; retry later"), and never the password.
func TestUnreachablePostgresAtStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := Defaults()
	cfg.DB = "postgres://callsig:s3cret@" + addr + "/callsig?sslmode=disable&connect_timeout=2"
	_, err = openStore(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "cannot reach it") || !strings.Contains(err.Error(), "connection refused") ||
		strings.Contains(err.Error(), "overloaded") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("open on a closed port: %v", err)
	}
}
