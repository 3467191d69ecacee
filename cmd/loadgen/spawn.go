package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is a callsig process the load generator started on a temporary
// database: built once, run with a generated secret, a free loopback port
// and the per-user rate limit off (the load would otherwise measure the
// limiter).
type server struct {
	bin, dir, db, addr string
	secret             string
	args               []string
	env                []string // added to the inherited environment
	logPath            string
	cmd                *exec.Cmd
	exited             chan struct{}
	log                *os.File
	// What the processes before a restart used: peak RSS and CPU time.
	prevPeak int64
	prevCPU  time.Duration
}

// buildServer compiles callsig/cmd/api into dir. It must run inside the
// callsig module (go run ./cmd/loadgen does).
func buildServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "callsig-api")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "callsig/cmd/api")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build callsig/cmd/api (run the load generator inside the callsig module, or give -server-bin): %w\n%s", err, out.Bytes())
	}
	return bin, nil
}

// spawnOptions says how to start the server.
type spawnOptions struct {
	bin         string // prebuilt binary; empty: build one
	synchronous string
	logLevel    string
	extra       []string // more server flags
	env         []string // more of the server's environment
	// Cluster mode: a postgres:// DSN (empty: a SQLite file in the
	// temporary directory), this node's id and the NATS URL. They go to
	// the server in its environment, so the DSN's password is not on the
	// command line for every user of the machine to read.
	postgres, nodeID, nats string
	secret                 string // the JWT secret; empty: a new one (every node of a cluster shares one)
}

// spawn builds (unless given a binary) and starts a server, and waits until
// it is ready.
func spawn(ctx context.Context, o spawnOptions) (*server, error) {
	dir, err := os.MkdirTemp("", "callsig-loadgen-*")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, db: filepath.Join(dir, "callsig.db"), logPath: filepath.Join(dir, "server.log"), bin: o.bin}
	if s.bin == "" {
		if s.bin, err = buildServer(ctx, dir); err != nil {
			s.cleanup()
			return nil, err
		}
	}
	if s.secret = o.secret; s.secret == "" {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			s.cleanup()
			return nil, err
		}
		s.secret = hex.EncodeToString(raw)
	}
	if s.addr, err = freeLoopbackAddr(); err != nil {
		s.cleanup()
		return nil, err
	}
	s.args = []string{"-addr", s.addr}
	if o.postgres == "" {
		s.args = append(s.args, "-db", s.db)
	} else {
		s.db = o.postgres
		s.env = []string{"CALLSIG_DB=" + o.postgres, "CALLSIG_NODE_ID=" + o.nodeID, "CALLSIG_NATS_URL=" + o.nats}
	}
	s.env = append(s.env, o.env...)
	s.args = append(append(s.args,
		"-jwt-secret", s.secret, "-rate-limit", "0",
		"-synchronous", o.synchronous, "-log-level", o.logLevel,
	), o.extra...)
	if s.log, err = os.Create(s.logPath); err != nil {
		s.cleanup()
		return nil, err
	}
	if _, err := s.start(ctx); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *server) url() string { return "http://" + s.addr }

// start runs the server process and waits until /readyz answers 200. It
// returns how long that took from the exec: opening (and after a crash,
// recovering) the database, re-arming the deadlines and listening.
func (s *server) start(ctx context.Context) (time.Duration, error) {
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if s.env != nil {
		cmd.Env = append(os.Environ(), s.env...)
	}
	cmd.SysProcAttr = childAttr()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start server: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res, err := hc.Get(s.url() + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return time.Since(began), nil
			}
		}
		select {
		case <-s.exited:
			return 0, fmt.Errorf("server exited during start: %s\n%s", cmd.ProcessState, s.logTail(20))
		case <-ctx.Done():
			s.kill()
			return 0, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return 0, fmt.Errorf("server not ready after 60s\n%s", s.logTail(20))
		}
	}
}

// kill ends the process at once (SIGKILL: a crash, nothing flushed).
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	s.remember()
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// remember keeps the figures of the running process before it goes away.
func (s *server) remember() {
	s.prevPeak = max(s.prevPeak, s.procStatus("VmHWM"))
	s.prevCPU += s.cpu()
}

// peakRSS is the highest resident set of any of the server's processes.
func (s *server) peakRSS() int64 { return max(s.prevPeak, s.procStatus("VmHWM")) }

// totalCPU is the CPU time of all the server's processes so far.
func (s *server) totalCPU() time.Duration { return s.prevCPU + s.cpu() }

// stop asks the server to shut down (SIGTERM) and waits for it.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.kill()
		return errors.New("server did not stop within 20s after SIGTERM; killed")
	}
	if st := s.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("server exited with %s\n%s", st, s.logTail(20))
	}
	return nil
}

// cleanup removes the temporary directory (binary, database, log).
func (s *server) cleanup() {
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// procStatus reads a "Vm…: N kB" line of /proc/<pid>/status in bytes:
// VmHWM is the peak resident set, VmRSS the current one.
func (s *server) procStatus(field string) int64 {
	if s.cmd == nil {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

// cpu is the CPU time the server process has used (user + system).
func (s *server) cpu() time.Duration {
	if s.cmd == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// logErrors counts ERROR lines in the server log.
func (s *server) logErrors() int {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("level=ERROR"))
}

func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// machineBusy is the CPU time all processes have used since boot (the
// "cpu" line of /proc/stat, idle and iowait excluded): with the server's
// and the load generator's own, it shows whether anything else competed
// for the cores during a run.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:8] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	const ticks = 100 // USER_HZ
	return time.Duration(busy) * time.Second / ticks
}
