package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// The JavaScript client's own tests (web/sdk/test, node --test) against a
// real server on loopback. The server runs on the fake clock; a control
// server of this test, on another loopback port, lets them mint tokens of
// any lifetime or exp, move the clock (token expiry, invitation timeouts),
// restart the server on its address and read a user's committed event log.
// None of that is in the production server. A second server, on the wall
// clock, holds each user to a request every 2 s (bursts of 2), for the
// tests of a stream the server refuses (sse.Refuse); it shares the first
// one's JWT secret, so the control's tokens are good on both.
//
// It runs in parallel with the other parallel tests: it waits far more
// than it computes (its files took 75 s one after another, most of it
// waiting on the wall clock; in three groups at once, 25 s).
func TestSDKNode(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node (>= 20) is needed for the JavaScript client's tests")
	}
	dir, err := filepath.Abs("../web/sdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); err != nil {
		t.Fatal("web/sdk/node_modules is missing: run `npm ci` in web/sdk (scripts/test does)")
	}
	// The test files by name: given the directory, node 20 would run
	// test/helpers.js as a test too.
	files, err := filepath.Glob(filepath.Join(dir, "test", "*.test.js"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no web/sdk/test/*.test.js (%v)", err)
	}
	// The files run one at a time against a server (they move its clock
	// and restart it), in sdkShards groups at once, each with servers of
	// its own: most of their time is waiting on the wall clock, and one
	// group held one of go test's parallel slots for 75 s.
	type shard struct {
		files []string
		env   []string
		out   []byte
		err   error
		took  time.Duration
	}
	shards := make([]*shard, min(sdkShards, len(files)))
	for i := range shards {
		// Heartbeats every 250 ms, real time: the client's tests of silent
		// streams set heartbeatTimeout to 1-1.5 s, and a quiet, healthy
		// stream must outlive it.
		s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithStreamHeartbeat(250*time.Millisecond))
		control := startSDKControl(t, s)
		limited := testkit.Start(t, testkit.WithConfig(func(c *app.Config) { c.RateLimit, c.RateBurst = 0.5, 2 }))
		shards[i] = &shard{env: append(os.Environ(), "CALLSIG_URL="+s.URL, "CALLSIG_CONTROL_URL="+control, "CALLSIG_LIMITED_URL="+limited.URL, "NO_COLOR=1")}
	}
	for i, f := range files {
		shards[i%len(shards)].files = append(shards[i%len(shards)].files, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Go(func() {
			start := time.Now()
			args := append([]string{"--test", "--test-concurrency=1", "--test-reporter=spec"}, sh.files...)
			cmd := exec.CommandContext(ctx, node, args...)
			cmd.Dir = dir
			cmd.Env = sh.env
			// node --test runs each file in a child process: past the
			// deadline the whole group goes, or a hung file's child
			// outlives the test (and the suite) still holding its ports.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			sh.out, sh.err = cmd.CombinedOutput()
			sh.took = time.Since(start)
		})
	}
	wg.Wait()
	for _, sh := range shards {
		names := make([]string, len(sh.files))
		for i, f := range sh.files {
			names[i] = filepath.Base(f)
		}
		t.Logf("node --test %s (%v):\n%s", strings.Join(names, " "), sh.took.Round(time.Millisecond), sh.out)
		if sh.err != nil {
			t.Errorf("node --test %s: %v", strings.Join(names, " "), sh.err)
		}
	}
}

// sdkShards is how many groups of TestSDKNode's files run at once.
const sdkShards = 3

// startSDKControl serves the test-only controls of TestSDKNode and returns
// its URL.
func startSDKControl(t *testing.T, s *testkit.Server) string {
	var mu sync.Mutex // one control at a time: a restart swaps s.App
	mux := http.NewServeMux()
	// A token valid ttl seconds, or until exp (Unix seconds) when given.
	// Tokens are minted on the wall clock, not the fake one, and exp has
	// whole seconds: two minted with the same ttl get the same exp only
	// within one wall-clock second, while those minted with the same exp
	// get it whenever they are minted.
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ttl := time.Hour
		if n, err := strconv.Atoi(q.Get("ttl")); err == nil && n > 0 {
			ttl = time.Duration(n) * time.Second
		}
		if q.Has("exp") {
			exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
			// Half a second more: TokenFor reads the clock again, and
			// truncates now+ttl to the second.
			if ttl = time.Until(time.Unix(exp, 0)) + 500*time.Millisecond; err != nil || ttl < time.Second {
				http.Error(w, "exp: Unix seconds, in the future", http.StatusBadRequest)
				return
			}
		}
		mu.Lock()
		defer mu.Unlock()
		writeJSON(w, map[string]string{"token": s.TokenFor(q.Get("user"), ttl)})
	})
	mux.HandleFunc("POST /advance", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms <= 0 {
			http.Error(w, "ms", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		s.Clock.Advance(time.Duration(ms) * time.Millisecond)
		writeJSON(w, map[string]int64{"now": s.Now()})
	})
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		s.Restart()
		writeJSON(w, map[string]string{"url": s.URL})
	})
	mux.HandleFunc("GET /log", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		type entry struct {
			ID     int64  `json:"id"`
			Type   string `json:"type"`
			Device string `json:"device"`
			CallID string `json:"callID"`
		}
		list := []entry{}
		for _, e := range s.Log(r.URL.Query().Get("user")) {
			list = append(list, entry{e.ID, string(e.Type), e.Device, e.CallID})
		}
		writeJSON(w, list)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
