package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/db"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
)

// pgbouncerBin is where Debian's pgbouncer package installs it.
const pgbouncerBin = "/usr/sbin/pgbouncer"

// pgbouncerPorts is the range the PgBouncers of the tests listen in, apart
// from testkit.FreeAddr's (20000-31999).
var pgbouncerPorts = [2]int{19700, 19800}

// StartPgBouncer starts a PgBouncer of its own for t in front of the
// local development server (pgtest), in pool_mode mode and with the
// other pgbouncer.ini lines given, and returns its address. PgBouncer is
// stopped when t ends. Without pgbouncer installed, t fails.
func StartPgBouncer(t testing.TB, mode string, lines ...string) string {
	t.Helper()
	if _, err := os.Stat(pgbouncerBin); err != nil {
		// scripts/test installs it; the suite never silently skips a
		// deployment the docs describe.
		t.Fatalf("PgBouncer is not installed (%s: %v): run scripts/test, which installs it, or apt-get install pgbouncer", pgbouncerBin, err)
	}
	// Its own directory, readable by all: as root, PgBouncer runs as
	// nobody (it refuses to run as root).
	dir, err := os.MkdirTemp("", "callsig-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := pgbouncerAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
max_client_conn = 400
default_pool_size = 40
%s
`, host, port, filepath.Join(dir, "users.txt"), mode, strings.Join(lines, "\n"))
	for name, text := range map[string]string{"pgbouncer.ini": ini, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	cmd := exec.Command(pgbouncerBin, args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("pgbouncer (%s):\n%s", mode, out.String())
		}
	})
	var dialErr error
	if !wait.Until(10*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("pgbouncer exited at start:\n%s", out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			dialErr = err
			return false
		}
		c.Close()
		return true
	}) {
		t.Fatalf("pgbouncer does not listen on %s: %v\n%s", addr, dialErr, out.String())
	}
	return addr
}

// ThroughPgBouncer is dsn, a pgtest DSN, made to go through the PgBouncer
// at addr (StartPgBouncer).
func ThroughPgBouncer(dsn, addr string) string {
	return strings.Replace(dsn, "127.0.0.1:5432", addr, 1)
}

// pgbouncerAddr returns a loopback address in pgbouncerPorts free now.
func pgbouncerAddr(t testing.TB) string {
	t.Helper()
	for p := pgbouncerPorts[0]; p < pgbouncerPorts[1]; p++ {
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	t.Fatalf("no free port in %d-%d for pgbouncer", pgbouncerPorts[0], pgbouncerPorts[1]-1)
	return ""
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Behind a PgBouncer in session mode as docs/cluster.md gives it (no
// ignore_startup_parameters), the store opens, migrates, settles the
// identity and serves, and its sessions commit synchronously with its
// statement timeout, whatever the database's defaults say.
func TestBehindPgBouncerInSessionMode(t *testing.T) {
	ctx := context.Background()
	bouncer := StartPgBouncer(t, "session")
	direct := pgtest.NewDatabase(t)
	name := direct[strings.LastIndex(direct, "/")+1 : strings.Index(direct, "?")]
	admin, err := pgx.Connect(ctx, pgtest.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	// What a pooler that dropped the store's settings would leave.
	_, err = admin.Exec(ctx, "ALTER DATABASE "+name+" SET synchronous_commit = off")
	admin.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dsn := ThroughPgBouncer(direct, bouncer)

	s, err := Open(ctx, dsn, Options{MaxConns: 2, StatementTimeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("Open behind PgBouncer in session mode: %v", err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// Every session of the pool, the warmed ones and one more, again and
	// again: the prepared statements are each session's own.
	for range 5 {
		var sync, timeout string
		var identities int
		if err := s.db.QueryRowContext(ctx, `SELECT current_setting('synchronous_commit'), current_setting('statement_timeout'),
			(SELECT COUNT(*) FROM database_identity)`).Scan(&sync, &timeout, &identities); err != nil {
			t.Fatal(err)
		}
		if sync != "on" || timeout != "3s" || identities != 1 {
			t.Fatalf("behind PgBouncer: synchronous_commit %s, statement_timeout %s, identity rows %d; want on, 3s, 1", sync, timeout, identities)
		}
	}
	// Those run outside a transaction under a session lock among them.
	list, err := db.Migrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	var applied int
	if err := s.db.GetContext(ctx, &applied, `SELECT COUNT(*) FROM schema_migrations`); err != nil || applied != len(list) {
		t.Fatalf("migrations applied behind PgBouncer: %d (%v), want %d", applied, err, len(list))
	}

	// The presence pool's writes, over prepared statements.
	p, err := OpenPresence(ctx, dsn, PresenceOptions{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := range 3 {
		inserted, err := p.RenewLease(ctx, "node-a", time.Minute)
		if err != nil || inserted != (i == 0) {
			t.Fatalf("renewal %d behind PgBouncer: inserted %v, %v; want %v", i, inserted, err, i == 0)
		}
	}

	// A second process opening the same database finds it migrated and
	// its identity known.
	s2, err := Open(ctx, dsn, Options{MaxConns: 2})
	if err != nil {
		t.Fatalf("second Open behind PgBouncer: %v", err)
	}
	s2.Close()
}

// A PgBouncer in transaction or statement mode is refused as Open
// starts, with a message that says what to set, before anything ran on
// the database; and not as a failure a retry mends.
func TestBehindPgBouncerInTransactionModeIsRefused(t *testing.T) {
	for _, mode := range []string{"transaction", "statement"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			// As a user who read about the startup parameters would have it.
			bouncer := StartPgBouncer(t, mode, "ignore_startup_parameters = statement_timeout,lock_timeout,synchronous_commit")
			direct := pgtest.NewDatabase(t)
			dsn := ThroughPgBouncer(direct, bouncer)
			ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
			defer cancel()
			s, err := Open(ctx, dsn, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open behind PgBouncer in %s mode succeeded; want it refused", mode)
			}
			if !strings.Contains(err.Error(), "pool_mode = session") || errors.Is(err, calls.ErrUnavailable) {
				t.Fatalf("Open behind PgBouncer in %s mode: %v; want a refusal naming pool_mode = session, not unavailable", mode, err)
			}
			conn, err := pgx.Connect(ctx, direct)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var migrated bool
			if err := conn.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&migrated); err != nil || migrated {
				t.Fatalf("schema_migrations exists: %v (%v); want nothing run before the refusal", migrated, err)
			}
		})
	}
}
