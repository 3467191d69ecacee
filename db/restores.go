package db

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
)

// A restore mark is an event of no user that `callsig backup` writes into
// its copy, at the last id of the copied log plus a gap (sqlite.RestoreGap):
// a server started on the copy gives its ids from past the mark. The ids
// between the last copied one and the mark are those the backed-up server
// may have given after the backup; a client holding one saw events the
// restored log does not have, so its stream is reset (NeverGiven) rather
// than resumed, and no event of the restored server ever comes under an
// id that named another. Marks are copied with the log (callsig migrate)
// and pruned with it: once a mark is pruned, so is every id below it, and
// a position in its gap is older than the log, reset as any other.
const RestoreMarkType = "logRestored"

var (
	// InsertRestoreMarkSQL(mark id, data, time) writes a mark.
	InsertRestoreMarkSQL = `INSERT INTO events (id, user_id, type, data, time) VALUES (?, '', '` + RestoreMarkType + `', ?, ?)`
	restoreMarksSQL      = `SELECT id, data FROM events WHERE user_id = '' AND type = '` + RestoreMarkType + `' ORDER BY id`
)

// RestoreMarkData is a mark's data: the last id of the log it follows.
func RestoreMarkData(after int64) string {
	return `{"after":` + strconv.FormatInt(after, 10) + `}`
}

// restoreGap is the ids after the last copied one (after) and before the
// mark, never given by this log.
type restoreGap struct{ after, mark int64 }

// LoadRestores reads the log's restore marks, once as the store opens:
// only a backup writes them, into a file no server has open.
func (l *EventLog) LoadRestores(ctx context.Context) error {
	q, err := l.pool()
	if err != nil {
		return err
	}
	rows, err := q.QueryContext(ctx, restoreMarksSQL)
	if err != nil {
		return l.failed(fmt.Errorf("db: read restore marks: %w", err))
	}
	defer rows.Close()
	var gaps []restoreGap
	for rows.Next() {
		var id int64
		var data string
		if err := rows.Scan(&id, &data); err != nil {
			return l.failed(fmt.Errorf("db: read restore marks: %w", err))
		}
		var d struct {
			After int64 `json:"after"`
		}
		if err := json.Unmarshal([]byte(data), &d); err != nil || d.After >= id {
			return fmt.Errorf("db: restore mark %d: bad data %q", id, data)
		}
		gaps = append(gaps, restoreGap{after: d.After, mark: id})
	}
	if err := rows.Err(); err != nil {
		return l.failed(fmt.Errorf("db: read restore marks: %w", err))
	}
	l.restores = gaps
	return nil
}

// NeverGiven reports whether id lies in the gap of a restore: an id the
// backed-up server may have given after the backup, which names nothing
// in this log (see RestoreMarkType). The mark's own id is not in the gap:
// the restored log gives it (a stream opened before its first new event
// is synced at it), and the backed-up server never came near it.
func (l EventLog) NeverGiven(id int64) bool {
	for _, g := range l.restores {
		if id > g.after && id < g.mark {
			return true
		}
	}
	return false
}
