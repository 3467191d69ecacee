package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `callsig backup` copies the database of a running development-mode
// node, with its secret beside it (so the tokens the node minted work on
// the restored one), and refuses what it cannot do without writing.
func TestBackupCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "callsig.db")
	startMain(t, "-addr 127.0.0.1:0 -db "+path, "CALLSIG_JWT_SECRET=")

	out := filepath.Join(dir, "backup.db")
	code, stdout, stderr := runMain(t, "backup", "-db", path, "-to", out)
	if code != 0 || !strings.Contains(stdout, "backed up "+path+" into "+out) || !strings.Contains(stdout, "copied the development secret") {
		t.Fatalf("backup of a running node: exit %d\n%s%s", code, stdout, stderr)
	}
	secret, err := os.ReadFile(path + ".secret")
	if err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile(out + ".secret")
	if err != nil || !bytes.Equal(copied, secret) {
		t.Fatalf("the secret beside the backup: %q (%v), want the node's", copied, err)
	}
	for _, f := range []string{out, out + ".secret"} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, fi, err)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "-db", path, "-to", out}, "already exists"},
		{[]string{"backup", "-db", path}, "-to is required"},
		{[]string{"backup", "-db", "postgres://x@127.0.0.1/db", "-to", filepath.Join(dir, "pg.db")}, "PostgreSQL's own tools"},
	} {
		code, stdout, stderr := runMain(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want 1 with %q\n%s%s", c.args, code, c.want, stdout, stderr)
		}
	}
}
