package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// A restore mark is an event of no user that moves a log's ids on past a
// gap. A client holding an id in the gap saw events the log does not have,
// so its stream is reset (NeverGiven) rather than resumed, and no event of
// the log ever comes under an id that named another.
//
// `callsig backup` writes one into its copy, at the last id of the copied
// log plus sqlite.RestoreGap, with the time of the backup (backupAt): the
// gap holds what the backed-up server gives after the backup. That mark is
// the same in every copy of the backup file, so the first start on a copy
// (the log's last id still the backup's mark: StartRestored) writes a mark
// of its own, past a gap sized by the time since the backup
// (restoreRate): a backup restored twice, the first restored node having
// run meanwhile, gives the second ids above any the first gave. Marks are
// copied with the log (callsig migrate, which does what a first start
// does) and pruned with it: once a mark is pruned, so is every id below
// it, and a position in its gap is older than the log, reset as any other.
const RestoreMarkType = "logRestored"

var (
	// InsertRestoreMarkSQL(mark id, data, time) writes a mark.
	InsertRestoreMarkSQL = `INSERT INTO events (id, user_id, type, data, time) VALUES (?, '', '` + RestoreMarkType + `', ?, ?)`
	// RestoreMarksSQL reads every restore mark (id, data) in id order.
	RestoreMarksSQL = `SELECT id, data FROM events WHERE user_id = '' AND type = '` + RestoreMarkType + `' ORDER BY id`
)

// RestoreMarkData is a mark's data: the last id of the log it follows,
// and for a backup's mark, when the backup was made (Unix ms; 0: none).
func RestoreMarkData(after, backupAt int64) string {
	if backupAt == 0 {
		return `{"after":` + strconv.FormatInt(after, 10) + `}`
	}
	return `{"after":` + strconv.FormatInt(after, 10) + `,"backupAt":` + strconv.FormatInt(backupAt, 10) + `}`
}

// restoreRate bounds the ids a node gives a millisecond: 1,000 (a million
// events a second, some 60 times what a 2-core node writes). A restored
// node's gap is the time since the backup at that rate, so its ids pass
// those of any node started on the same backup before it, which ran for
// less time. 285 years of it fill JavaScript's 2^53 safe integers.
const restoreRate = 1000

// StartRestored writes a restored log's own restore mark when the log's
// last id (lastID) is still the mark of the backup it was copied from: the
// first start on a copy of a backup. It returns the mark written, or 0
// when the log is no untouched backup, and how far the clock is behind
// the backup's time (see ClockBehindWarning). q reads the SQLite file (backups
// are SQLite's); ins writes the mark, where the log now is (InsertRestoreMarkSQL
// in the dialect and transaction of the caller).
func StartRestored(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, lastID int64, now time.Time, ins func(ctx context.Context, id int64, data string, at int64) error) (mark int64, behind time.Duration, err error) {
	var data string
	err = q.QueryRowContext(ctx, pendingMarkSQL, lastID).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("db: read the backup's restore mark: %w", err)
	}
	var d markData
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		return 0, 0, fmt.Errorf("db: restore mark %d: bad data %q", lastID, data)
	}
	if d.BackupAt == 0 {
		return 0, 0, nil // a restored node's own mark: it ran, and gave no id since
	}
	elapsed := now.UnixMilli() - d.BackupAt
	if elapsed < 0 {
		behind = time.Duration(-elapsed) * time.Millisecond
	}
	mark = lastID + 1 + max(elapsed, 0)*restoreRate
	if err := ins(ctx, mark, RestoreMarkData(lastID, 0), now.UnixMilli()); err != nil {
		return 0, 0, fmt.Errorf("db: write the restored log's restore mark: %w", err)
	}
	return mark, behind, nil
}

// RestoreGap is how many ids a restore mark leaves for those the lost
// server may have given after its copy was made (2^40: three years of
// 10,000 events a second), which a client may hold: resuming from one of
// them gets a reset, never the restored log's events under an id that
// named another.
const RestoreGap = 1 << 40

// CopyMark is the restore mark of a log found to be a copy of unknown
// age (db/postgres: the database was restored, copied or failed over),
// whose last id is last. Its gap holds every id the lost original may
// have given after the copy was made (RestoreGap of them), and, as
// StartRestored's, every id of a node that started on another copy of
// the same log before now: those stay under restoreRate ids a
// millisecond since the epoch. Nothing dates the copy, so the clock
// stands in for the backup's time: the ids start near 1.8e15 (2026), well
// under JavaScript's 2^53 (9e15) for two centuries.
func CopyMark(last int64, now time.Time) int64 {
	return max(last+1, now.UnixMilli()*restoreRate) + RestoreGap
}

// ClockBehindWarning is what a first start on a backup whose time is
// ahead of the clock says: the gap that keeps its ids above those of an
// earlier restore of the same backup is sized by the clock.
func ClockBehindWarning(behind time.Duration) string {
	return fmt.Sprintf("this clock is %v behind the backup's time: if this backup was restored before, on a host whose clock was not behind too, the ids that node gave may be given again (its clients then resume silently); set the clock right and restore again", behind.Round(time.Millisecond))
}

var pendingMarkSQL = `SELECT data FROM events WHERE id = ? AND user_id = '' AND type = '` + RestoreMarkType + `'`

type markData struct {
	After    int64 `json:"after"`
	BackupAt int64 `json:"backupAt"`
}

// restoreGap is the ids after the last copied one (after) and before the
// mark, never given by this log.
type restoreGap struct{ after, mark int64 }

// LoadRestores reads the log's restore marks as the store opens. Only a
// backup (into a file no server has open) or a store finding its
// database restored (db/postgres, before any of its sessions writes)
// writes them.
func (l EventLog) LoadRestores(ctx context.Context) error {
	q, err := l.pool()
	if err != nil {
		return err
	}
	rows, err := q.QueryContext(ctx, RestoreMarksSQL)
	if err != nil {
		return l.failed(fmt.Errorf("db: read restore marks: %w", err))
	}
	defer rows.Close()
	var marks []RestoreMark
	for rows.Next() {
		var m RestoreMark
		if err := rows.Scan(&m.ID, &m.Data); err != nil {
			return l.failed(fmt.Errorf("db: read restore marks: %w", err))
		}
		marks = append(marks, m)
	}
	if err := rows.Err(); err != nil {
		return l.failed(fmt.Errorf("db: read restore marks: %w", err))
	}
	return l.SetRestores(marks)
}

// RestoreMark is a row RestoreMarksSQL reads.
type RestoreMark struct {
	ID   int64
	Data string
}

// SetRestores makes marks, every restore mark of the log in id order,
// the gaps NeverGiven knows, in every copy of l: a store may learn of a
// restore while it serves.
func (l EventLog) SetRestores(marks []RestoreMark) error {
	gaps := make([]restoreGap, 0, len(marks))
	for _, m := range marks {
		var d markData
		if err := json.Unmarshal([]byte(m.Data), &d); err != nil || d.After >= m.ID {
			return fmt.Errorf("db: restore mark %d: bad data %q", m.ID, m.Data)
		}
		gaps = append(gaps, restoreGap{after: d.After, mark: m.ID})
	}
	l.restores.Store(&gaps)
	return nil
}

// NeverGiven reports whether id lies in the gap of a restore: an id the
// backed-up server may have given after the backup, which names nothing
// in this log (see RestoreMarkType). The mark's own id is not in the gap:
// the restored log gives it (a stream opened before its first new event
// is synced at it), and the backed-up server never came near it.
func (l EventLog) NeverGiven(id int64) bool {
	if l.restores == nil {
		return false // a log not made by NewEventLog: no restore known
	}
	gaps := l.restores.Load()
	if gaps == nil {
		return false
	}
	for _, g := range *gaps {
		if id > g.after && id < g.mark {
			return true
		}
	}
	return false
}
