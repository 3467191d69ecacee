package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"callsig/handlers"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildServer compiles cmd/api once per test run: the crash test must kill
// a real process, not a goroutine. It is built with the race detector when
// the tests are (scripts/test runs them so): go test has then compiled
// every package it needs that way already, and the build is a link of a
// few seconds, where a build without it compiles everything afresh on a
// clean machine (90 s on a 2-core CI box, on the suite's longest path).
// The binary also reports its own data races (see checkRaces).
func buildServer(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "callsig-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "callsig")
		args := []string{"build", "-o", binPath}
		if raceBuild {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "callsig/cmd/api")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// checkRaces fails t when a server built with the race detector (see
// buildServer) reported a data race in its log, logs, read once the
// process has exited. The server's environment ends with raceEnv.
func checkRaces(t *testing.T, name string, logs []byte) (reported bool) {
	t.Helper()
	if raceBuild && bytes.Contains(logs, []byte("WARNING: DATA RACE")) {
		t.Errorf("%s reported a data race:\n%s", name, logs)
		return true
	}
	return false
}

// raceEnv, last in a server's environment, has the race detector write
// its reports to the server's standard error, where checkRaces reads
// them, whatever GORACE the tests run with (log_path would send them to
// files).
const raceEnv = "GORACE="

type process struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
}

const crashSecret = "crash-test-secret-0123456789abcdef0123"

// startProcess runs bin on dbPath at addr, with env added to its
// environment, and waits until it is ready.
func startProcess(t *testing.T, bin, dbPath, addr string, env ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, "-addr", addr, "-db", dbPath)
	cmd.Env = append(append(append(os.Environ(), "CALLSIG_JWT_SECRET="+crashSecret, "CALLSIG_RATE_LIMIT=0"), env...), raceEnv)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, cmd: cmd, url: "http://" + addr, logs: logs}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		checkRaces(t, "the server", logs.Bytes())
	})
	var err error
	ready := wait.Until(20*time.Second, func() bool {
		var res *http.Response
		if res, err = http.Get(p.url + "/readyz"); err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	if !ready {
		// Its log is whole (and no longer written) once it has exited.
		p.cmd.Process.Kill()
		p.cmd.Wait()
		t.Fatalf("server did not become ready: %v\n%s", err, logs)
	}
	return p
}

func (p *process) do(user, method, path string, body any) (int, map[string]any) {
	p.t.Helper()
	tok, err := handlers.MintToken([]byte(crashSecret), handlers.TokenRequest{UserID: user, TTL: time.Hour}, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, p.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// SIGKILL the real binary right after it answered: every call that got a
// 201 is there after a restart on the same file, and a timeout that fell
// due while the server was down fires as soon as it is back.
func TestCrashLosesNothing(t *testing.T) {
	t.Parallel()
	bin := buildServer(t)
	dbPath := filepath.Join(t.TempDir(), "callsig.db")
	addr := testkit.FreeAddr(t)
	p := startProcess(t, bin, dbPath, addr)

	type acked struct{ id, caller string }
	var created []acked
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			caller := fmt.Sprintf("caller%d", w)
			for i := range 25 {
				status, body := p.do(caller, "POST", "/calls", map[string]any{"invitees": []string{fmt.Sprintf("callee%d-%d", w, i)}, "timeout": 1})
				if status == http.StatusCreated {
					mu.Lock()
					created = append(created, acked{body["callID"].(string), caller})
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	if len(created) != 200 {
		t.Fatalf("only %d of 200 invitations were acknowledged", len(created))
	}
	// Let every 1 s timeout fall due while the server is down.
	time.Sleep(1200 * time.Millisecond)

	p = startProcess(t, bin, dbPath, addr)
	for _, c := range created {
		var call map[string]any
		timedOut := wait.Until(10*time.Second, func() bool {
			var status int
			status, call = p.do(c.caller, "GET", "/calls/"+c.id, nil)
			if status != http.StatusOK {
				t.Fatalf("acknowledged call %s is gone after the crash: %d %v", c.id, status, call)
			}
			users := call["callUserList"].([]any)
			return call["state"] == "ended" && users[1].(map[string]any)["state"] == "timeout"
		})
		if !timedOut {
			t.Fatalf("call %s did not time out after the restart: %v", c.id, call)
		}
	}
}

// SIGTERM: the server finishes, closes the database and exits 0; the data
// is there on the next start.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	bin := buildServer(t)
	dbPath := filepath.Join(t.TempDir(), "callsig.db")
	addr := testkit.FreeAddr(t)
	p := startProcess(t, bin, dbPath, addr)
	status, body := p.do("alice", "POST", "/calls", map[string]any{"invitees": []string{"bob"}})
	if status != http.StatusCreated {
		t.Fatalf("invite: %d %v", status, body)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs)
	}
	p = startProcess(t, bin, dbPath, addr)
	if status, _ := p.do("bob", "GET", "/calls/"+body["callID"].(string), nil); status != http.StatusOK {
		t.Fatalf("call lost across a clean restart: %d", status)
	}
}
