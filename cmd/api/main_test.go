package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"callsig/handlers"
	"callsig/internal/testlog"
	"callsig/internal/wait"
)

// TestMain runs the real main when the test binary is started as the
// server by a test below (CALLSIG_TEST_MAIN_ARGS holds its arguments), so
// signals reach the process exactly as they reach a deployed one.
func TestMain(m *testing.M) {
	if goos, ok := os.LookupEnv("CALLSIG_TEST_TYPECHECK"); ok {
		typeCheckMain(goos) // see TestServerBuildsForMacOSAndWindows
	}
	if args, ok := os.LookupEnv("CALLSIG_TEST_MAIN_ARGS"); ok {
		os.Args = append([]string{"callsig"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testSecret = "test-secret-of-at-least-32-bytes!!"

// requestInFlight starts a POST /calls at addr whose body never ends, and
// returns once its handler reads it: Expect: 100-continue makes the server
// say when a handler starts reading the body, and from then on the request
// is in flight. The connection is closed when t ends.
func requestInFlight(t *testing.T, addr, tok string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /calls HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", addr, tok)
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, "100 Continue") {
		t.Fatalf("the request in flight: %q (%v), want 100 Continue", status, err)
	}
	fmt.Fprint(conn, "{")
}

// inviteBob has the server at addr create a call to bob with tok.
func inviteBob(t *testing.T, addr, tok string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/calls", strings.NewReader(`{"invitees":["bob"]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /calls: %s", res.Status)
	}
}

// served waits at most within for serve, started with done, to return,
// and returns what it returned.
func served(t *testing.T, done <-chan error, within time.Duration, logs *logBuffer) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("serve did not return within %v\n%s", within, logs)
		return nil
	}
}

// logBuffer collects a server's log lines for the test to wait on.
type logBuffer = testlog.Buffer

// secretEnv is an environment that holds testSecret as CALLSIG_JWT_SECRET
// and nothing else.
func secretEnv(k string) string {
	if k == "CALLSIG_JWT_SECRET" {
		return testSecret
	}
	return ""
}

// mainProcess is the real main (the callsig binary, see TestMain) run as
// a server: its logs, and its exit once it has exited.
type mainProcess struct {
	*exec.Cmd
	logs   *logBuffer
	exited chan error // Wait's result; put back by whoever takes it
}

// startMain starts the real main with args (one string, as
// CALLSIG_TEST_MAIN_ARGS takes them) and env added to the test's
// environment, waits until it listens, and kills it at the test's end.
func startMain(t *testing.T, args string, env ...string) (p *mainProcess, addr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "CALLSIG_TEST_MAIN_ARGS="+args), env...)
	p = &mainProcess{Cmd: cmd, logs: &logBuffer{}, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p, listening(t, p.logs)
}

var listeningAddr = regexp.MustCompile(`msg="callsig listening" addr=(\S+)`)

// listening waits for the server's "listening" line and returns its address.
func listening(t *testing.T, logs *logBuffer) string {
	t.Helper()
	var addr string
	ok := wait.Until(20*time.Second, func() bool {
		m := listeningAddr.FindStringSubmatch(logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	if !ok {
		t.Fatalf("the server did not log that it listens:\n%s", logs)
	}
	return addr
}

// serve returns once its context is done: the HTTP server, the background
// parts and the store all stop within the shutdown timeout.
func TestServeStopsWhenContextIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "callsig.db"), "-shutdown-timeout", "2s"}
	getenv := secretEnv
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, getenv, logs) }()
	listening(t, logs)
	cancel()
	if err := served(t, done, 2*time.Second+5*time.Second, logs); err != nil { // the shutdown's bound, and slack
		t.Fatalf("serve = %v, want nil after a clean shutdown\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("no clean stop logged:\n%s", logs)
	}
}

// waitFor gives up on background parts (or a store close) that do not
// stop in time, so the process can exit (non-zero), and passes on what
// they returned otherwise.
func TestWaitForIsBounded(t *testing.T) {
	stuck := make(chan error)
	start := time.Now()
	if err := waitFor(stuck, 50*time.Millisecond); !errors.Is(err, errShutdownTimeout) {
		t.Fatalf("waitFor on stuck parts = %v, want errShutdownTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("waitFor took %v past its 50ms bound", d)
	}
	ran := make(chan error, 1)
	boom := errors.New("boom")
	ran <- boom
	if err := waitFor(ran, time.Hour); !errors.Is(err, boom) {
		t.Fatalf("waitFor = %v, want the parts' error", err)
	}
}

// The first SIGTERM starts a graceful shutdown, which waits for requests
// in flight; a second one kills the process at once, as an operator
// pressing Ctrl-C twice expects.
func TestSecondSignalKills(t *testing.T) {
	cmd, addr := startMain(t, "-addr 127.0.0.1:0 -db "+filepath.Join(t.TempDir(), "callsig.db")+
		" -shutdown-timeout 60s -read-timeout 60s", "CALLSIG_JWT_SECRET="+testSecret)
	logs, exited := cmd.logs, cmd.exited

	// A request whose body never finishes keeps the graceful shutdown
	// waiting (up to the read and shutdown timeouts, here a minute).
	tok, err := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	requestInFlight(t, addr, tok)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the first signal to start the shutdown", func() bool {
		return strings.Contains(logs.String(), "shutting down")
	})
	select {
	case err := <-exited:
		t.Fatalf("exited (%v) on the first signal despite a request in flight\n%s", err, logs)
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Success() {
			t.Fatalf("after the second signal: %v, want the process killed\n%s", err, logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the second signal did not end the process\n%s", logs)
	}
}

// callsig token refuses a TTL that is not positive, a user that is no
// user ID and a stray argument, rather than print a token and exit 0.
func TestTokenBadInput(t *testing.T) {
	env := secretEnv
	for _, args := range [][]string{
		{"-user", "alice", "-ttl", "-1h"},
		{"-user", "alice", "-ttl", "0s"},
		{"-user", "not a valid user!"},
		{"-user", "alice", "extra"},
	} {
		var out bytes.Buffer
		err := token(args, env, &out)
		if err == nil {
			tok := strings.TrimSpace(out.String())
			c := jwt.MapClaims{}
			_, _, _ = jwt.NewParser().ParseUnverified(tok, c)
			exp, _ := c.GetExpirationTime()
			t.Errorf("token %q: exit 0, printed a token (sub=%v exp=%v, now=%v)", args, c["sub"], exp, time.Now().Truncate(time.Second))
		}
	}
}

// A SIGTERM whose in-flight requests do not finish within the shutdown
// timeout is no clean stop: serve fails (exit 1), as for a background part
// that would not stop; it returned nil (an operations review).
func TestCutRequestFailsTheStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &logBuffer{}
	args := []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "callsig.db"), "-shutdown-timeout", "1s"}
	getenv := secretEnv
	done := make(chan error, 1)
	go func() { done <- serve(ctx, func() {}, args, getenv, logs) }()
	addr := listening(t, logs)
	tok, _ := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	requestInFlight(t, addr, tok)
	cancel()
	if err := served(t, done, 20*time.Second, logs); err == nil || !strings.Contains(err.Error(), "in-flight requests") {
		t.Fatalf("in-flight request cut at the shutdown timeout: serve returned %v", err)
	}
}

// The shutdown cuts unread answers early enough for the drain, which looks
// at its connections at most every drainPoll, to see them end in time,
// and never later than half of what the requests have left.
func TestCutLead(t *testing.T) {
	tests := []struct{ left, timeout, want time.Duration }{
		{14 * time.Second, 15 * time.Second, time.Second}, // the reserve
		{2700 * time.Millisecond, 3 * time.Second, drainPoll},
		{900 * time.Millisecond, time.Second, 450 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := cutLead(tt.left, tt.timeout); got != tt.want {
			t.Errorf("cutLead(%v, %v) = %v, want %v", tt.left, tt.timeout, got, tt.want)
		}
	}
}
