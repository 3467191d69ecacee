package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"callsig/internal/wait"
)

// The README's "Try it with curl" walkthrough, run as written against the
// binary started as the README starts it (development mode, data in the
// working directory): a new user's first minutes. Only what a reader
// would do by hand is changed: `go run ./cmd/api` runs the built binary,
// localhost:8080 is the test's own address, and bob's stream, left
// running "in a third terminal", runs in the background into a file.
// It mostly waits on curl, so it runs beside the other parallel tests.
func TestREADMECurlWalkthrough(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed to run the README's commands")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the README's commands")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := curlWalkthrough(t, string(readme))

	bin := buildServer(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	srv := exec.Command(bin)
	srv.Dir = dir
	srv.Env = append(withoutCallsigEnv(os.Environ()), "CALLSIG_ADDR="+addr)
	logs := &bytes.Buffer{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
		checkRaces(t, "the server", logs)
	})
	if !wait.Until(20*time.Second, func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}) {
		t.Fatalf("the server did not become ready")
	}

	var script strings.Builder
	script.WriteString("set -eu\n")
	// `go run ./cmd/api ARGS` is the built binary, run where it keeps
	// its data (the token subcommand reads the development secret there).
	script.WriteString(`go() { if [ "$1" = run ] && [ "$2" = ./cmd/api ]; then shift 2; "$CALLSIG_BIN" "$@"; else command go "$@"; fi; }` + "\n")
	for _, b := range blocks {
		for _, line := range strings.Split(b, "\n") {
			line = strings.ReplaceAll(line, "localhost:8080", addr)
			if strings.HasPrefix(line, "curl -N ") {
				// The listening terminal: in the background, and on once
				// its stream has answered (its first bytes come at once).
				line += " > bob-events.txt 2>&1 &\n" +
					"for _ in $(seq 200); do [ -s bob-events.txt ] && break; sleep 0.05; done\n" +
					"echo; echo '== walkthrough'"
			}
			script.WriteString(line + "\n")
		}
	}
	script.WriteString("kill %1\n")
	cmd := exec.Command(bash, "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(withoutCallsigEnv(os.Environ()), "CALLSIG_BIN="+bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", err, script.String(), out, stderr.String())
	}

	// Each `curl -s` prints one JSON answer, with no newline between them.
	_, answers, _ := bytes.Cut(out, []byte("== walkthrough\n"))
	var got []map[string]any
	dec := json.NewDecoder(bytes.NewReader(answers))
	for {
		var v map[string]any
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("answer %d is not JSON: %v\nstdout:\n%s", len(got)+1, err, out)
		}
		got = append(got, v)
	}
	// The general call: accept, then the call; the advanced one: accept,
	// invite, join, quit, end, then the list.
	if len(got) != 8 {
		t.Fatalf("%d answers, want 8 (2 for the general call, 6 for the advanced one):\n%s", len(got), answers)
	}
	for i, v := range got {
		if _, problem := v["code"]; problem {
			t.Errorf("answer %d is an error: %v", i+1, v)
		}
	}
	general := got[1]
	if general["state"] != "ended" || userState(general, "bob") != "accepted" {
		t.Errorf("the general call after bob's accept: %v; want state ended, bob accepted (as the README says)", general)
	}
	list, _ := got[7]["callList"].([]any)
	if len(list) != 2 {
		t.Fatalf("alice's call list: %v; want her two calls", got[7])
	}
	advanced, _ := list[0].(map[string]any)
	if advanced["mode"] != "advanced" || advanced["state"] != "ended" {
		t.Errorf("alice's newest call: %v; want the advanced call, ended", advanced)
	}
	for user, want := range map[string]string{"bob": "quit", "carol": "accepted"} {
		if s := userState(advanced, user); s != want {
			t.Errorf("the advanced call's %s: %q, want %q", user, s, want)
		}
	}

	// Bob's terminal showed his invitations as they came.
	events, err := os.ReadFile(filepath.Join(dir, "bob-events.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(regexp.MustCompile(`(?m)^event: callInvitationReceived$`).FindAll(events, -1)); n != 2 {
		t.Errorf("bob's stream showed %d invitations, want 2:\n%s", n, events)
	}
}

// curlWalkthrough returns the sh blocks of the README's "Try it with curl"
// section, in order.
func curlWalkthrough(t *testing.T, readme string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Try it with curl\n")
	if !ok {
		t.Fatal(`README.md has no "## Try it with curl" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) < 3 {
		t.Fatalf("the walkthrough has %d sh blocks, want its setup and its two calls", len(blocks))
	}
	return blocks
}

// withoutCallsigEnv drops the CALLSIG_ settings of the environment the
// tests run in: the README's server runs on its defaults.
func withoutCallsigEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CALLSIG_") {
			out = append(out, kv)
		}
	}
	return out
}

// userState is the state of user in a call as the API answers it.
func userState(call map[string]any, user string) string {
	users, _ := call["callUserList"].([]any)
	for _, u := range users {
		m, _ := u.(map[string]any)
		if m["userID"] == user {
			s, _ := m["state"].(string)
			return s
		}
	}
	return ""
}
