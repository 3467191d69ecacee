package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"callsig/db/sqlite"
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

	// A secret left by an earlier backup of that name: refused before the
	// copy, which is not made.
	if err := os.WriteFile(filepath.Join(dir, "stale.secret"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "-db", path, "-to", out}, "already exists"},
		{[]string{"backup", "-db", path}, "-to is required"},
		{[]string{"backup", "-db", "postgres://x@127.0.0.1/db", "-to", filepath.Join(dir, "pg.db")}, "PostgreSQL's own tools"},
		{[]string{"backup", "-db", path, "-to", filepath.Join(dir, "stale")}, "stale.secret already exists"},
	} {
		code, stdout, stderr := runMain(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, want 1 with %q\n%s%s", c.args, code, c.want, stdout, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused backup made its copy: %v", err)
	}
}

// A backup that fails while it writes the copy (here the file size limit,
// as a full disk does) leaves nothing beside the file it was to create: not
// the file, nor the rollback journal SQLite wrote for it.
func TestBackupFailingToWriteLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "callsig.db")
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 30000)
		INSERT INTO events (user_id, type, data, time) SELECT 'u' || i, 'x', printf('%.200c', 'y'), 0 FROM n`)
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	out := filepath.Join(outDir, "backup.db")
	// 1 MiB at most per file: the copy (some 8 MiB, more than SQLite's page
	// cache, which spills to the file through a journal) fails midway.
	cmd := exec.Command("bash", "-c", `trap "" XFSZ; ulimit -f 1024; exec "$0" -test.run='^$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "CALLSIG_TEST_MAIN_ARGS=backup -db "+path+" -to "+out)
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a backup beyond the file size limit succeeded:\n%s", b)
	}
	left, _ := os.ReadDir(outDir)
	for _, e := range left {
		t.Errorf("the failed backup left %s (%s)", e.Name(), strings.TrimSpace(string(b)))
	}
}

// The server's -h names the subcommands, which its flags do not show.
func TestHelpNamesTheSubcommands(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), func() {}, []string{"-h"}, func(string) string { return "" }, &out, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("run -h = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"callsig token", "callsig migrate", "callsig backup", "-addr"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-h does not show %q:\n%s", want, out.String())
		}
	}
}
