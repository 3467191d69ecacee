package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"callsig/internal/pgtest"
)

// A standby (promoted after a failover) or a point-in-time restore holds
// event_ids as the primary WAL-logged it: nextval logs 32 values ahead
// and writes nothing more for the next 32, so the sequence stands up to
// 32 past the last id the copy holds, while the lost primary may have
// given every id up to there. Those ids are in the restore's gap too: a
// client holding one is reset. (Found with a real standby promoted after
// its primary gave id 2: the mark's gap started after 33.)
func TestCopyWhoseSequenceIsAheadOfItsLog(t *testing.T) {
	orig := pgtest.NewDatabase(t)
	s := openStoreAt(t, orig)
	kept := invite(t, s, "kept")
	s.Close()
	copied := pgtest.NewDatabaseFrom(t, dbName(t, orig))

	s = openStoreAt(t, orig)
	lost := invite(t, s, "lost") // given by the primary after the copy
	s.Close()

	// What the standby replayed of nextval(kept): the value logged ahead.
	conn, err := pgx.Connect(context.Background(), copied)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), `SELECT setval('event_ids', $1)`, kept+32); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())

	c := openStoreAt(t, copied)
	defer c.Close()
	if !c.NeverGiven(lost) {
		t.Errorf("on the promoted copy, id %d (given by the lost primary) is not in a restore's gap", lost)
	}
	if c.NeverGiven(kept) {
		t.Errorf("on the promoted copy, id %d (the copy holds its event) is in a restore's gap", kept)
	}
	if next := invite(t, c, "next"); next <= kept+32 || c.NeverGiven(next) {
		t.Errorf("the copy's first new id is %d, want one past the gap", next)
	}
}
