package chaos

import (
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, to check the file after the last kill

	"callsig/internal/testkit"
)

// killSecret is the fixed HS256 secret of the server under test.
const killSecret = "chaos-kill-secret-0123456789abcdef-0123456789"

// killServer is the real callsig binary on one store (a SQLite file or a
// PostgreSQL database): started, SIGKILLed at a random instant and started
// again on the same store, as e2e/crash_test.go does once. A crash must be
// a process dying, not a goroutine stopping.
type killServer struct {
	t                  *testing.T
	bin, db, addr, log string
	env                []string // added to the environment: a node's cluster settings
	cmd                *exec.Cmd
	exited             chan struct{}
	starts             int
}

// buildCallsig compiles cmd/api (without -race: the server is not what
// the race detector watches here, and it must start fast).
func buildCallsig(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "callsig")
	out, err := exec.Command("go", "build", "-o", bin, "callsig/cmd/api").CombinedOutput()
	if err != nil {
		t.Fatalf("go build callsig/cmd/api: %v\n%s", err, out)
	}
	return bin
}

// newKillServer runs bin on db (a SQLite file path or a postgres:// URL)
// with env added to its environment.
func newKillServer(t *testing.T, bin, db string, env ...string) *killServer {
	t.Helper()
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)
	s := &killServer{t: t, bin: bin, db: db, addr: addr, log: filepath.Join(dir, "server.log"), env: env}
	t.Cleanup(s.kill)
	return s
}

func (s *killServer) url() string { return "http://" + s.addr }

// start runs the binary and waits until /readyz answers 200: the file is
// open (and recovered after a crash) and the deadlines are re-armed.
func (s *killServer) start() time.Duration {
	s.t.Helper()
	log, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	s.starts++
	fmt.Fprintf(log, "=== start %d\n", s.starts)
	cmd := exec.Command(s.bin,
		"-addr", s.addr, "-db", s.db, "-jwt-secret", killSecret,
		// The load is many requests per user per second.
		"-rate-limit", "0",
		// Callers are not tracked as offline while the server is down: a
		// call cancelled for that would hide what the check looks for.
		"-heartbeat-timeout", "10m",
		// The machine's PostgreSQL is shared with the other packages'
		// tests (see testkit.Start).
		"-pg-max-conns", "8",
		"-log-level", "warn")
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = childAttr()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.exited)
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := hc.Get(s.url() + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return time.Since(began)
			}
		}
		select {
		case <-s.exited:
			s.t.Fatalf("server exited during start %d: %s\n%s", s.starts, cmd.ProcessState, s.logTail())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server not ready 60s after start %d: %v\n%s", s.starts, err, s.logTail())
		}
	}
}

// kill sends SIGKILL (nothing flushed, no shutdown) and waits for the exit.
func (s *killServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

func (s *killServer) logTail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// integrityCheck opens the file read-only, as it was left by the last
// SIGKILL (WAL and all), and runs PRAGMA integrity_check.
func integrityCheck(path string) (string, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return "", err
	}
	defer db.Close()
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", err
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n"), rows.Err()
}

// killGate holds the clients back while the server is down, so they do
// not burn the shared cores on refused connections; only the requests in
// flight at the kill see it.
type killGate struct {
	mu sync.Mutex
	ch chan struct{} // closed while open
}

func newKillGate() *killGate {
	g := &killGate{ch: make(chan struct{})}
	close(g.ch)
	return g
}

func (g *killGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
		g.ch = make(chan struct{})
	default:
	}
}

func (g *killGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.ch:
	default:
		close(g.ch)
	}
}

func (g *killGate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}
