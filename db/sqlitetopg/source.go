package sqlitetopg

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"callsig/db/sqlite"
)

// ErrSourceInUse is returned when another process has the SQLite file
// open: a node still running would keep writing what the copy misses.
var ErrSourceInUse = errors.New("the SQLite file is in use by another process: stop the node first")

// ErrSourceChanged is returned when the SQLite file was written while the
// copy read it (a node started on it meanwhile): what the copy read is
// not all the file holds, so nothing is committed.
var ErrSourceChanged = errors.New("the SQLite file was written during the copy (was a node started on it?): stop every node on it and run the copy again")

// source is the SQLite file being copied: its connection, and what its
// files looked like before it was opened, to tell at the end that nothing
// wrote it meanwhile.
type source struct {
	*sql.DB
	path  string // absolute
	stamp stamp
	// lock holds the file (sqlite.Lock) from the open until after the
	// target's commit: a node started meanwhile fails at once (ErrInUse)
	// rather than writing between the last check and the commit.
	lock io.Closer
}

// release lets the file go. Only after the close: closing the lock's
// descriptor would drop the POSIX locks the connection holds on the file.
func (s *source) release() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// stamp is what any write to the file changes: the size and modification
// time of the database file and of its WAL (zero when there is none), and
// what a write changes where neither does. A filesystem may keep times to
// the second or coarser, and a write may leave both sizes as they were: a
// WAL that was all checkpointed is written again from its start, inside
// its old length, and a file in rollback-journal mode is rewritten in
// place. So the stamp also holds a digest of the WAL (every commit writes
// frames to it, each with a checksum and the WAL's salts) and the file
// change counter of the database header (rollback mode increments it on
// every commit). Reading a WAL costs little: a node checkpoints at about
// 4 MiB of frames, so its WAL is seldom much larger (nothing caps it,
// though: a long read during a burst of writes can leave it longer).
type stamp struct {
	size, walSize int64
	mod, walMod   time.Time
	counter       [4]byte
	walSum        [sha256.Size]byte
}

// counterOffset is where the database header holds its file change
// counter (https://sqlite.org/fileformat2.html#file_change_counter).
const counterOffset = 24

func stampOf(abs string) (stamp, error) {
	var st stamp
	f, err := os.Open(abs)
	if err != nil {
		return st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	st.size, st.mod = fi.Size(), fi.ModTime()
	if _, err := f.ReadAt(st.counter[:], counterOffset); err != nil && !errors.Is(err, io.EOF) {
		return st, err
	}
	w, err := os.Open(abs + "-wal")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, nil
	case err != nil:
		return st, err
	}
	defer w.Close()
	wi, err := w.Stat()
	if err != nil {
		return st, err
	}
	st.walSize, st.walMod = wi.Size(), wi.ModTime()
	h := sha256.New()
	if _, err := io.Copy(h, w); err != nil {
		return st, fmt.Errorf("read its WAL: %w", err)
	}
	h.Sum(st.walSum[:0])
	return st, nil
}

// openSource opens the SQLite file at path read-only, after checking that
// it exists, that no other process has it open, and that its schema is the
// one this build writes (the columns copied are read by name).
func openSource(ctx context.Context, path string) (*source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	busy, err := inUse(abs)
	if err != nil {
		return nil, fmt.Errorf("source %s: check whether it is in use: %w", path, err)
	}
	if busy {
		return nil, fmt.Errorf("source %s: %w", path, ErrSourceInUse)
	}
	lock, err := sqlite.Lock(abs)
	if errors.Is(err, sqlite.ErrInUse) {
		return nil, fmt.Errorf("source %s: %w", path, ErrSourceInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	st, err := stampOf(abs)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	// A file: URI, so SQLite itself applies mode=ro (a plain path would
	// drop it and open read-write, creating what is missing). busy_timeout
	// waits out a checkpoint by a process that is just closing the file.
	u := url.URL{Scheme: "file", Path: abs, RawQuery: "mode=ro&_pragma=busy_timeout(5000)"}
	src, err := sql.Open("sqlite", u.String())
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	// One connection: every read is in one transaction (one snapshot).
	src.SetMaxOpenConns(1)
	if err := checkSchema(ctx, src); err != nil {
		src.Close()
		lock.Close()
		return nil, fmt.Errorf("source %s: %w", path, err)
	}
	return &source{DB: src, path: abs, stamp: st, lock: lock}, nil
}

// unchanged checks, once the copy has read everything and closed the
// file, that no process has it open now and that nothing wrote it since
// it was opened: a node started during the copy (the target's lock may
// take seconds) would otherwise lose what it wrote. The check runs after
// the close because opening and closing the file here would drop the
// POSIX locks this process's SQLite connection holds on it.
func (s *source) unchanged() error {
	busy, err := inUse(s.path)
	if err != nil {
		return fmt.Errorf("source %s: check whether it is in use: %w", s.path, err)
	}
	if busy {
		return fmt.Errorf("source %s: %w", s.path, ErrSourceInUse)
	}
	st, err := stampOf(s.path)
	if err != nil {
		return fmt.Errorf("source %s: %w", s.path, err)
	}
	if !st.equal(s.stamp) {
		return fmt.Errorf("source %s: %w", s.path, ErrSourceChanged)
	}
	return nil
}

// equal: an empty WAL is no WAL (the copy's own read-only open creates
// one where a stopped node removed it); a write writes frames to it.
func (a stamp) equal(b stamp) bool {
	return a.size == b.size && a.mod.Equal(b.mod) && a.counter == b.counter &&
		a.walSize == b.walSize && (a.walSize == 0 || a.walMod.Equal(b.walMod) && a.walSum == b.walSum)
}

// checkSchema refuses a file that is not a callsig database at the
// schema version of this build.
func checkSchema(ctx context.Context, src *sql.DB) error {
	want, err := sqlite.SchemaVersion()
	if err != nil {
		return err
	}
	var got int
	err = src.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&got)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return errors.New("not a callsig database (no schema_migrations table)")
		}
		return fmt.Errorf("read its schema version: %w", err)
	}
	switch {
	case got < want:
		return fmt.Errorf("its schema is at version %d, this callsig's at %d: start and stop a node of this version on it once (that upgrades it), then copy", got, want)
	case got > want:
		return fmt.Errorf("its schema is at version %d, newer than this callsig's (%d): use the callsig that wrote it", got, want)
	}
	return nil
}

// sequences reads sqlite_sequence: the highest value each AUTOINCREMENT
// table ever gave, which may be above the highest row still kept (pruned
// events, deleted rows). The copy moves PostgreSQL's sequences past it, so
// no id is ever given twice.
func sequences(ctx context.Context, tx *sql.Tx) (map[string]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, seq FROM sqlite_sequence`)
	if err != nil {
		return nil, fmt.Errorf("read sqlite_sequence: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var name string
		var seq int64
		if err := rows.Scan(&name, &seq); err != nil {
			return nil, fmt.Errorf("read sqlite_sequence: %w", err)
		}
		out[name] = seq
	}
	return out, rows.Err()
}
