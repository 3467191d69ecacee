package postgres

import (
	"context"
	"testing"

	"callsig/internal/pgtest"
)

// A session that connected to a standby passes the identity check with
// its timeline unknown. Once the standby is promoted, that session must
// not go on serving (it would write with the standby's ids before any
// session saw the new timeline): the pool replaces it with one the check
// settles. A standby is simulated here: the timeline's query fails, as
// pg_current_wal_lsn does in recovery, and pg_is_in_recovery's answer is
// swapped.
func TestStandbySessionIsReplacedOncePromoted(t *testing.T) {
	s := openStoreAt(t, pgtest.NewDatabase(t))
	defer s.Close()

	timeline, recovery := identityParts[2], inRecoverySQL
	defer func() { identityParts[2], inRecoverySQL = timeline, recovery }()
	identityParts[2] = `SELECT (1/0)::bigint` // recovery is in progress
	inRecoverySQL = `SELECT true`
	s.db.SetMaxIdleConns(0) // the sessions open before the failover are gone
	s.db.SetMaxIdleConns(2)

	pid := func() int64 {
		t.Helper()
		var p int64
		if err := s.db.QueryRowContext(context.Background(), `SELECT pg_backend_pid()`).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	onStandby := pid()
	if again := pid(); again != onStandby {
		t.Fatalf("the standby's session (backend %d) was replaced (by %d) while the standby is in recovery", onStandby, again)
	}

	identityParts[2], inRecoverySQL = timeline, `SELECT false` // promoted
	if after := pid(); after == onStandby {
		t.Errorf("the session opened on the standby (backend %d) served again after its promotion, unchecked", onStandby)
	}
}
