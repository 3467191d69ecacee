package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"callsig/internal/pgtest"
	"callsig/internal/testkit"
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
	blocks := readmeBlocks(t, "Try it with curl", 3)

	bin := buildServer(t)
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)
	startDevNode(t, bin, dir, addr)

	// `go run ./cmd/api ARGS` is the built binary, run where it keeps its
	// data (the token subcommand reads the development secret there).
	prelude := `go() { if [ "$1" = run ] && [ "$2" = ./cmd/api ]; then shift 2; "$CALLSIG_BIN" "$@"; else command go "$@"; fi; }`
	out := runSnippets(t, dir, bin, prelude, blocks, nil, func(line string) string {
		line = strings.ReplaceAll(line, "localhost:8080", addr)
		if strings.HasPrefix(line, "curl -N ") {
			// The listening terminal: in the background, and on once its
			// stream has answered (its first bytes come at once).
			line += " > bob-events.txt 2>&1 &\n" + waitForBytes("bob-events.txt") + "\necho; echo '== walkthrough'"
		}
		return line
	})

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

	// Bob's terminal shows his invitations (delivered apart from the
	// answers, so perhaps a moment after the last).
	if events, n := invitationsShown(filepath.Join(dir, "bob-events.txt"), 2); n != 2 {
		t.Errorf("bob's stream showed %d invitations, want 2:\n%s", n, events)
	}
}

// invitationsShown waits up to 10 s for the stream written to file to hold
// want invitations, and returns what it holds and how many it shows.
func invitationsShown(file string, want int) ([]byte, int) {
	var (
		events []byte
		n      int
	)
	wait.Until(10*time.Second, func() bool {
		events, _ = os.ReadFile(file)
		n = len(regexp.MustCompile(`(?m)^event: callInvitationReceived$`).FindAll(events, -1))
		return n >= want
	})
	return events, n
}

// startDevNode starts bin as the README starts it: in dir, on its defaults
// (development mode, data in dir), at addr; and waits until it is ready.
// It is killed when the test ends, and its log then checked for races.
func startDevNode(t *testing.T, bin, dir, addr string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(withoutCallsigEnv(os.Environ()), "CALLSIG_ADDR="+addr, raceEnv)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // an error when the test waited already
		checkRaces(t, "the development-mode node", logs.Bytes())
	})
	waitURLReady(t, "http://"+addr)
	return cmd, logs
}

// readmeBlocks returns the sh blocks of README.md's section under the
// heading ("## " or "### "), in order, failing t when there are fewer than
// want.
func readmeBlocks(t *testing.T, heading string, want int) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var section string
	for _, level := range []string{"## ", "### "} {
		if _, rest, ok := strings.Cut(readme, "\n"+level+heading+"\n"); ok {
			// Up to the next heading of any level but the first (lines
			// of the sh blocks start with "# ").
			section = rest
			if i := regexp.MustCompile(`\n#{2,6} `).FindStringIndex(rest); i != nil {
				section = rest[:i[0]]
			}
			break
		}
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) < want {
		t.Fatalf("README.md's %q has %d sh blocks, want %d", heading, len(blocks), want)
	}
	return blocks
}

// runSnippets runs the README's blocks with bash in dir, "set -eu", after
// prelude, each line through rewrite, with the environment of the tests
// but their CALLSIG_ settings, plus CALLSIG_BIN=bin and env. It runs in a
// process group of its own, killed when the test ends: the snippets
// leave servers and streams running in the background, as a reader's
// terminals would. It returns the standard output, failing t when the
// script fails.
func runSnippets(t *testing.T, dir, bin, prelude string, blocks, env []string, rewrite func(string) string) []byte {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed to run the README's commands")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the README's commands")
	}
	var script strings.Builder
	script.WriteString("set -eu\n" + prelude + "\n")
	for _, b := range blocks {
		for _, line := range strings.Split(b, "\n") {
			script.WriteString(rewrite(line) + "\n")
		}
	}
	cmd := exec.Command(bash, "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(append(append(withoutCallsigEnv(os.Environ()), "CALLSIG_BIN="+bin), env...), raceEnv)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Files, not pipes: Wait would wait for the background processes,
	// which hold the script's output too.
	stdout, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	err = cmd.Wait()
	out, _ := os.ReadFile(stdout.Name())
	if err != nil {
		errs, _ := os.ReadFile(stderr.Name())
		t.Fatalf("the README's commands failed: %v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", err, script.String(), out, errs)
	}
	return out
}

// waitForBytes is a shell loop that waits up to 10 s for file to hold
// something: a stream started in the background has answered.
func waitForBytes(file string) string {
	return "for _ in $(seq 200); do [ -s " + file + " ] && break; sleep 0.05; done"
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

// The README's "Running a cluster" walkthrough, run as written: three
// nodes of the built binary on one PostgreSQL database and the machine's
// NATS, bob listening on one node, alice inviting him through another,
// bob accepting on the third. Changed from the text: the database is the
// test's own (made by it, not by createdb), the ports are free ones, `go
// build` copies the built binary, the nodes' logs and bob's stream go to
// files, the script waits for the nodes' /readyz (a reader types slower
// than a script) and the nodes' NATS subjects have a prefix of the test's.
func TestREADMEClusterWalkthrough(t *testing.T) {
	t.Parallel()
	blocks := readmeBlocks(t, "Running a cluster", 1)
	dsn := pgtest.NewDatabase(t)
	db := dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")]
	bin := buildServer(t)
	dir := t.TempDir()
	ports := map[string]string{}
	for _, p := range []string{"8081", "8082", "8083"} {
		ports["127.0.0.1:"+p] = testkit.FreeAddr(t)
	}
	var ready strings.Builder
	for _, addr := range ports {
		ready.WriteString("for _ in $(seq 300); do curl -sf http://" + addr + "/readyz > /dev/null && break; sleep 0.1; done\n")
	}
	prelude := `go() { if [ "$1" = build ] && [ "$2" = -o ]; then cp "$CALLSIG_BIN" "$3"; else command go "$@"; fi; }`
	var r [4]byte
	_, _ = rand.Read(r[:])
	env := []string{"CALLSIG_NATS_PREFIX=callsig-readme-" + hex.EncodeToString(r[:])}
	out := runSnippets(t, dir, bin, prelude, blocks, env, func(line string) string {
		if strings.HasPrefix(line, "createdb ") {
			return ": the test made the database " + db
		}
		line = strings.ReplaceAll(line, "/callsig?", "/"+db+"?")
		for readmeAddr, addr := range ports {
			line = strings.ReplaceAll(line, readmeAddr, addr)
		}
		switch {
		case strings.HasPrefix(line, "CALLSIG_NODE_ID=") && strings.HasSuffix(line, " &"):
			line = strings.TrimSuffix(line, "&") + ">> nodes.log 2>&1 &"
			if strings.HasPrefix(line, "CALLSIG_NODE_ID=c ") {
				line += "\n" + ready.String()
			}
		case strings.HasPrefix(line, "curl -N ") && strings.HasSuffix(line, " &"):
			line = strings.TrimSuffix(line, "&") + "> bob-events.txt 2>&1 &\n" + waitForBytes("bob-events.txt") + "\necho; echo '== walkthrough'"
		}
		return line
	})

	_, answer, _ := bytes.Cut(out, []byte("== walkthrough\n"))
	var accepted map[string]any
	if err := json.Unmarshal(answer, &accepted); err != nil {
		t.Fatalf("bob's accept answered %q: %v\nstdout:\n%s", answer, err, out)
	}
	if _, problem := accepted["code"]; problem {
		t.Fatalf("bob's accept on node c: %v", accepted)
	}
	if events, n := invitationsShown(filepath.Join(dir, "bob-events.txt"), 1); n != 1 {
		t.Errorf("bob's stream on node a showed %d invitations, want the one made on node b:\n%s", n, events)
	}
	// What the README says each node logs at startup.
	logs, err := os.ReadFile(filepath.Join(dir, "nodes.log"))
	if err != nil {
		t.Fatal(err)
	}
	checkRaces(t, "a node", logs)
	for _, node := range []string{"a", "b", "c"} {
		want := regexp.MustCompile(`store open.* node=` + node + ` backend=postgres host=127\.0\.0\.1:5432 database=` + db + `\b`)
		if !want.Match(logs) {
			t.Errorf("no startup line of node %s as the README shows it (%s) in:\n%s", node, want, logs)
		}
	}
}

// The README's "Moving from SQLite to PostgreSQL" commands, run as
// written: a development-mode node made a call and was stopped (SIGTERM);
// `go run ./cmd/api migrate -from callsig.db -to URL` copies its file, and
// a node started on the URL with the file's secret serves the call to the
// token the old node minted. Changed from the text: the URL is the test's
// database, the secret is `$(cat callsig.db.secret)` as the README's text
// says, and the node runs in the background at the test's address.
func TestREADMEMoveToPostgres(t *testing.T) {
	t.Parallel()
	blocks := readmeBlocks(t, "Moving from SQLite to PostgreSQL", 1)
	bin := buildServer(t)
	dir := t.TempDir()
	addr := testkit.FreeAddr(t)

	// The SQLite node the move starts from, with a call pending.
	old, logs := startDevNode(t, bin, dir, addr)
	mint := exec.Command(bin, "token", "-user", "alice")
	mint.Dir, mint.Env = dir, withoutCallsigEnv(os.Environ())
	token, err := mint.Output()
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(token))
	call := readmeDo(t, addr, tok, "POST", "/calls", `{"invitees":["bob"],"timeout":600}`, http.StatusCreated)
	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := old.Wait(); err != nil {
		t.Fatalf("the SQLite node's exit after SIGTERM: %v\n%s", err, logs)
	}

	dsn := pgtest.NewDatabase(t)
	prelude := `go() { if [ "$1" = run ] && [ "$2" = ./cmd/api ]; then shift 2; "$CALLSIG_BIN" "$@"; else command go "$@"; fi; }`
	runSnippets(t, dir, bin, prelude, blocks, []string{"CALLSIG_ADDR=" + addr}, func(line string) string {
		line = strings.ReplaceAll(line, "postgres://callsig@db.example.com/callsig", dsn)
		if strings.HasPrefix(line, "CALLSIG_DB=") {
			line = strings.ReplaceAll(line, "CALLSIG_JWT_SECRET=…", "CALLSIG_JWT_SECRET=$(cat callsig.db.secret)")
			line += " > node.log 2>&1 &"
		}
		return line
	})
	waitURLReady(t, "http://"+addr)
	got := readmeDo(t, addr, tok, "GET", "/calls/"+call["callID"].(string), "", http.StatusOK)
	if got["state"] != "started" || got["caller"] != "alice" || userState(got, "bob") == "" {
		t.Errorf("the call after the move: %v; want alice's started call to bob", got)
	}
	nodeLog, _ := os.ReadFile(filepath.Join(dir, "node.log"))
	if !bytes.Contains(nodeLog, []byte("backend=postgres")) {
		t.Errorf("the node after the move does not say it runs on PostgreSQL:\n%s", nodeLog)
	}
	checkRaces(t, "the PostgreSQL node", nodeLog)
}

// readmeDo sends one request with token and wants status; it returns the
// decoded answer.
func readmeDo(t *testing.T, addr, token, method, path, body string, status int) map[string]any {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != status {
		t.Fatalf("%s %s: %d %v (%v), want %d", method, path, res.StatusCode, out, err, status)
	}
	return out
}
