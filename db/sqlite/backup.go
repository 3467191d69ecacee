package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// RestoreGap is how far a backup moves the event ids on: a server started
// on the backup gives its ids past it, after the last the backup holds
// (and further, by the time since the backup: db.StartRestored). The ids
// between are those the backed-up server may have given after the backup
// (db.RestoreGap), which a client may hold: resuming from one of them gets
// a reset (db.RestoreMarkType), never the restored server's events under
// an id that named another.
const RestoreGap = db.RestoreGap

// BackupReport is what Backup made.
type BackupReport struct {
	Bytes       int64         // the backup file's size
	LastEventID int64         // the last id of the log backed up
	Mark        int64         // the backup's restore mark: a server started on it gives ids above it
	Took        time.Duration // from the start to the file's fsync
}

// Backup writes a consistent copy of the database at from, which a server
// may have open and be writing, to the new file to (VACUUM INTO: one read
// transaction, so the copy holds every commit up to a point and nothing
// after). In the copy, the event ids move on by RestoreGap behind a
// restore mark (db.RestoreMarkType), so that a server started on it one
// day resets the clients that hold ids given after the backup. The file is
// fsynced, with its directory, before Backup returns, and so is the WAL of
// from. to must not exist: an old backup is never overwritten by half of a
// new one.
func Backup(ctx context.Context, from, to string, now time.Time) (*BackupReport, error) {
	start := time.Now()
	abs, err := filepath.Abs(from)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	out, err := filepath.Abs(to)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	// Created empty first, which VACUUM INTO fills: readable by its owner
	// only, as the database (it holds webhook signing secrets), and never
	// an existing file.
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("backup: %s already exists: give a new file", to)
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	f.Close()
	done := false
	defer func() {
		if !done {
			// With the rollback journal SQLite wrote beside it when the
			// copy failed (a full disk, a file size limit): a file named
			// after one that does not exist, which nothing else removes.
			os.Remove(out)
			os.Remove(out + "-journal")
		}
	}()
	// mode=ro: the server's file is only read (a file: URI, so SQLite
	// applies it); busy_timeout waits out a checkpoint in progress.
	u := url.URL{Scheme: "file", Path: abs, RawQuery: "mode=ro&_pragma=busy_timeout(5000)"}
	src, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("backup: open %s: %w", from, err)
	}
	defer src.Close()
	if err := isCallsig(ctx, src); err != nil {
		return nil, fmt.Errorf("backup: %s: %w", from, err)
	}
	if _, err := src.ExecContext(ctx, "VACUUM INTO ?", out); err != nil {
		return nil, fmt.Errorf("backup: copy %s: %w", from, err)
	}
	if err := src.Close(); err != nil {
		return nil, fmt.Errorf("backup: close %s: %w", from, err)
	}
	// The copy may hold commits the node has not fsynced yet (it answers
	// once its syncer has): made durable now, so that a power cut of the
	// node right after the backup cannot lose ids the backup holds, and
	// have the node give them again to other events.
	if err := syncIfThere(abs + "-wal"); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	rep, err := markRestore(ctx, out, now)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	info, err := os.Stat(out)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	rep.Bytes = info.Size()
	rep.Took = time.Since(start)
	done = true
	return rep, nil
}

// isCallsig refuses a file with no event log: marking it would fail
// after the copy, or mark a file of something else.
func isCallsig(ctx context.Context, conn *sql.DB) error {
	var n int
	err := conn.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('events', 'calls')`).Scan(&n)
	if err != nil {
		return err
	}
	if n != 2 {
		return errors.New("not a callsig database")
	}
	return nil
}

// markRestore moves the copy's event ids on by RestoreGap behind a restore
// mark, in rollback-journal mode with a full sync (nothing else has the
// new file open), and fsyncs the file and its directory.
func markRestore(ctx context.Context, path string, now time.Time) (*BackupReport, error) {
	u := url.URL{Scheme: "file", Path: path, RawQuery: "_pragma=journal_mode(DELETE)&_pragma=synchronous(FULL)"}
	conn, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open the copy: %w", err)
	}
	defer conn.Close()
	rep := &BackupReport{}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("mark the copy: %w", err)
	}
	defer tx.Rollback()
	err = tx.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'events'`).Scan(&rep.LastEventID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("mark the copy: read its last event id: %w", err)
	}
	mark := rep.LastEventID + RestoreGap
	if _, err := tx.ExecContext(ctx, db.InsertRestoreMarkSQL, mark, db.RestoreMarkData(rep.LastEventID, now.UnixMilli()), now.UnixMilli()); err != nil {
		return nil, fmt.Errorf("mark the copy: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("mark the copy: %w", err)
	}
	if err := conn.Close(); err != nil {
		return nil, fmt.Errorf("close the copy: %w", err)
	}
	if err := syncFileAndDir(path); err != nil {
		return nil, err
	}
	rep.Mark = mark
	return rep, nil
}

func syncFileAndDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// startRestored gives a copy of a backup, at its first start, a restore
// mark of its own (db.StartRestored): the same backup restored twice must
// not give the ids the first restored node gave. Durable with the first
// commit after it: the syncer's fsync of the WAL takes its frames too.
func startRestored(ctx context.Context, wdb *sqlx.DB, log *slog.Logger) error {
	var last int64
	err := wdb.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'events'`).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("db: read the last event id: %w", err)
	}
	mark, behind, err := db.StartRestored(ctx, wdb, last, time.Now(), func(ctx context.Context, id int64, data string, at int64) error {
		_, err := wdb.ExecContext(ctx, db.InsertRestoreMarkSQL, id, data, at)
		return err
	})
	if mark > 0 {
		log.Info("first start on a restored backup: event ids go on past a gap", "backup_mark", last, "first_id", mark+1)
	}
	if behind > 0 {
		log.Warn(db.ClockBehindWarning(behind))
	}
	return err
}

// syncIfThere fsyncs the file at path when there is one: fsync needs no
// write access, and it flushes what any process wrote.
func syncIfThere(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}
