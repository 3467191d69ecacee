package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"callsig/db/sqlite"
	"callsig/handlers"
	"callsig/internal/pgtest"
)

// runMain runs the real main (the callsig binary, see TestMain) with args
// and returns its exit code and output.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CALLSIG_TEST_MAIN_ARGS="+strings.Join(args, " "))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// `callsig migrate` refuses a file a running node has open, copies it once
// the node stopped, refuses to copy into the database again, and never
// prints the password of the target URL.
func TestMigrateCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callsig.db")
	server, addr := startMain(t, "-addr 127.0.0.1:0 -db "+path, "CALLSIG_JWT_SECRET="+testSecret)
	logs, exited := server.logs, server.exited
	tok, err := handlers.MintToken([]byte(testSecret), handlers.TokenRequest{UserID: "alice", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inviteBob(t, addr, tok)

	// Trust auth ignores the password; it must still never be printed.
	const password = "s3cret-pw"
	dsn := strings.Replace(pgtest.NewDatabase(t), "postgres@", "postgres:"+password+"@", 1)
	code, out, errOut := runMain(t, "migrate", "-from", path, "-to", dsn)
	if code == 0 || !strings.Contains(errOut, "in use") {
		t.Fatalf("migrate of a file in use: exit %d\n%s%s", code, out, errOut)
	}

	if err := server.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("server: %v\n%s", err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the server did not stop\n%s", logs)
	}

	code, out, errOut = runMain(t, "migrate", "-from", path, "-to", dsn)
	if code != 0 || !strings.Contains(out, "calls  1") || !strings.Contains(out, "copied into 127.0.0.1:5432/callsig_test_") {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errOut)
	}
	code, out2, errOut2 := runMain(t, "migrate", "-from", path, "-to", dsn)
	if code == 0 || !strings.Contains(errOut2, "not empty") {
		t.Fatalf("second migrate: exit %d\n%s%s", code, out2, errOut2)
	}
	for _, s := range []string{out, errOut, out2, errOut2} {
		if strings.Contains(s, password) {
			t.Fatalf("the password was printed:\n%s", s)
		}
	}
}

// The report names the columns whose text was changed to fit PostgreSQL
// (a NUL an older server stored in extendedData) and how many values, so
// the operator knows what differs from the file.
func TestMigrateReportsReplacedText(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for id, ext := range map[string]string{"c1": "a\x00b", "c2": "\x00"} {
		if _, err := raw.Exec(`INSERT INTO calls (id, caller, mode, state, timeout, extended_data, create_time) VALUES (?, 'alice', 'general', 'ended', 30, ?, 1000)`, id, ext); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	var out, errOut bytes.Buffer
	if err := migrate(ctx, []string{"-from", path, "-to", pgtest.NewDatabase(t)}, &out, &errOut); err != nil {
		t.Fatalf("migrate: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "copied with U+FFFD in its place") || !strings.Contains(out.String(), "\n  calls.extended_data: 2 values\n") {
		t.Fatalf("the report does not count the 2 values replaced:\n%s", out.String())
	}
	if strings.Count(out.String(), "  calls.") != 1 {
		t.Fatalf("the report counts other columns too:\n%s", out.String())
	}
}
