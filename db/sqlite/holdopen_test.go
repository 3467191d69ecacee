package sqlite

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// holdOpenEnv names the database a test binary started by holdOpen keeps
// open, as a node of a version that took no flock did.
const holdOpenEnv = "CALLSIG_TEST_HOLD_OPEN"

// holdOpenIfAsked is the other process's side: open the file in WAL mode
// with SQLite alone, write to it, say "open" and hold it until stdin ends.
func holdOpenIfAsked() {
	path := os.Getenv(holdOpenEnv)
	if path == "" {
		return
	}
	conn, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)")
	if err == nil {
		_, err = conn.Exec(`CREATE TABLE IF NOT EXISTS held (x INTEGER)`)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("open")
	_, _ = io.Copy(io.Discard, os.Stdin)
	conn.Close()
	os.Exit(0)
}

// holdOpen starts another process that holds the database at path open,
// and returns what lets it go (and waits for it to exit).
func holdOpen(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdOpenEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if !released {
			released = true
			stdin.Close()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(release)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("the process holding %s said %q (%v)", filepath.Base(path), line, err)
	}
	return release
}

// An upgrade that starts the new node before the old one has stopped (a
// Kubernetes rolling update on one volume) used to find the file free: a
// node of a version before the flock takes none, so the new node migrated
// the schema under it and both served the file, each with a writer and a
// cache of calls of its own. A file another process has open in SQLite is
// refused too; once it closed, the file opens.
func TestFileAnotherProcessHoldsWithoutFlockIsRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "callsig.db")
	release := holdOpen(t, path)
	if s, err := Open(ctx, path, Options{}); !errors.Is(err, ErrInUse) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a file another process holds open: %v, want ErrInUse", err)
	}
	release()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("Open once the other process closed it: %v", err)
	}
	s.Close()
}
