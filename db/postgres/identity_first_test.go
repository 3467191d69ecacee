package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/db"
	"callsig/internal/pgtest"
)

// A backup taken before the identity was recorded (by a version before
// migration 0012) holds no identity: restored after the upgrade, the ids
// the upgraded database gave after the backup must still never be given
// again. The first node to record the identity of a log that already
// holds events cannot tell such a restore from the upgrade itself, so it
// moves the ids on as for a restore: for the upgrade, a harmless jump.
func TestBackupFromBeforeTheIdentityWasRecorded(t *testing.T) {
	orig := pgtest.NewDatabase(t)
	s := openStoreAt(t, orig)
	kept := invite(t, s, "kept")
	s.Close()
	// Served by the previous version: no identity recorded.
	if err := ForgetIdentity(context.Background(), orig); err != nil {
		t.Fatal(err)
	}
	backup := pgtest.NewDatabaseFrom(t, dbName(t, orig))

	s = openStoreAt(t, orig) // the upgrade
	lost := invite(t, s, "lost")
	s.Close()

	r := openStoreAt(t, backup) // the old backup restored
	defer r.Close()
	if !r.NeverGiven(lost) {
		t.Errorf("on the restored backup, id %d (given after it) is not in a restore's gap", lost)
	}
	if r.NeverGiven(kept) {
		t.Errorf("on the restored backup, id %d (the backup holds its event) is in a restore's gap", kept)
	}
	if next := invite(t, r, "next"); next <= lost {
		t.Errorf("the restored backup gave id %d, not above %d given after the backup", next, lost)
	}
}

// A database that never held an event (a new one, or one `callsig
// migrate` is about to fill) records its identity and moves nothing.
func TestEmptyDatabaseRecordsItsIdentityWithoutAMark(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := openStoreAt(t, dsn)
	s.Close()
	if n := restoreMarks(t, dsn); n != 0 {
		t.Errorf("a new database holds %d restore marks, want 0", n)
	}
}

// The first check on that backup was interrupted after it moved event_ids
// on and before its commit (setval is not undone by a rollback): the next
// check's gap must still start at the backup's last id, not past the
// sequence, or the ids given after the backup are in no gap.
func TestBackupFromBeforeTheIdentityWasRecordedCheckInterrupted(t *testing.T) {
	orig := pgtest.NewDatabase(t)
	s := openStoreAt(t, orig)
	kept := invite(t, s, "kept")
	s.Close()
	if err := ForgetIdentity(context.Background(), orig); err != nil {
		t.Fatal(err)
	}
	backup := pgtest.NewDatabaseFrom(t, dbName(t, orig))

	s = openStoreAt(t, orig)
	lost := invite(t, s, "lost")
	s.Close()

	conn, err := pgx.Connect(context.Background(), backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), `SELECT setval('event_ids', $1)`, db.CopyMark(kept, time.Now())); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())

	r := openStoreAt(t, backup)
	defer r.Close()
	if !r.NeverGiven(lost) {
		t.Errorf("on the restored backup, id %d (given after it) is not in a restore's gap", lost)
	}
}
