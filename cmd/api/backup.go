package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"callsig/db/sqlite"
	"callsig/internal/app"
)

const backupUsage = `Usage: callsig backup -db <sqlite file> -to <new file>

Writes a consistent copy of a node's SQLite database to a new file while the
node runs (one read transaction: every commit up to a point, nothing after),
readable by its owner only, fsynced before it returns. A development-mode
secret beside the database (<db>.secret) is copied beside the backup.

To restore: stop the node, move the database and its -wal and -shm files
away, put the backup (and its .secret) in their place, start the node. The
backup's event ids are moved on by 2^40: a client that saw events the node
gave after the backup gets a reset when it resumes, never other events
under the ids it holds. What was committed after the backup is lost.

Flags:
`

// backup is `callsig backup`: it parses flags and prints; the copy is
// db/sqlite's.
func backup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var from, to string
	fs := flag.NewFlagSet("callsig backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&from, "db", getenv("CALLSIG_DB"), "the node's SQLite file (default $CALLSIG_DB, else callsig.db)")
	fs.StringVar(&to, "to", "", "the backup file to create (it must not exist)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), backupUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if from == "" {
		from = "callsig.db"
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("backup: unexpected argument %q", fs.Arg(0))
	case to == "":
		return errors.New("backup: -to is required (see callsig backup -h)")
	case app.IsPostgresDSN(from):
		return errors.New("backup: a PostgreSQL database is backed up with PostgreSQL's own tools (pg_dump, base backups)")
	}
	// Checked before the copy, which would be thrown away when the
	// secret could not be put beside it.
	if _, err := os.Stat(from + ".secret"); err == nil {
		if _, err := os.Lstat(to + ".secret"); err == nil {
			return fmt.Errorf("backup: %s.secret already exists: give a new file", to)
		}
	}
	rep, err := sqlite.Backup(ctx, from, to, time.Now())
	if err != nil {
		return err
	}
	secret, err := copySecret(from+".secret", to+".secret")
	if err != nil {
		os.Remove(to)
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backed up %s into %s: %d bytes in %s; events up to id %d; a node started on it gives ids above %d\n",
		from, to, rep.Bytes, rep.Took.Round(time.Millisecond), rep.LastEventID, rep.Mark)
	if secret {
		fmt.Fprintf(stdout, "copied the development secret into %s.secret\n", to)
	}
	return nil
}

// copySecret copies the development secret at from, if there is one, to a
// new file readable by its owner only.
func copySecret(from, to string) (bool, error) {
	b, err := os.ReadFile(from)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(to)
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(to)
		return false, err
	}
	return true, f.Close()
}
