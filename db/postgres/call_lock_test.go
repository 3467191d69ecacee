package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/fakeclock"
)

// A change reads its call locked (FOR UPDATE) and so sees the call as the
// change before it committed it. Here another node's change holds the
// call and ends it while an invitee accepts: the accept waits for it and
// then finds the call ended. Read unlocked, the accept saw the call
// started and was answered 200, its user written accepted in a call that
// had ended (a change made on a stale read: with the lock dropped, every
// other PostgreSQL test passed, a mutation review found).
func TestChangeWaitsForTheCallsLockAndReadsTheCommittedCall(t *testing.T) {
	nodes, dsn := openNodes(t, 1)
	ctx := context.Background()
	clock := fakeclock.New(time.UnixMilli(1_767_225_600_000))
	svc := calls.NewService(calls.Options{Store: nodes[0], Clock: clock})
	res, err := svc.Invite(ctx, calls.Actor{UserID: "m", Device: "default"}, calls.InviteInput{Invitees: []string{"z"}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	holder, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // committed below
	if _, err := holder.Exec(`SELECT 1 FROM calls WHERE id = $1 FOR UPDATE`, res.CallID); err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(`UPDATE calls SET state = 'ended', end_reason = 'canceled', end_time = 1
		WHERE id = $1`, res.CallID); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := svc.Accept(ctx, calls.Actor{UserID: "z", Device: "default"}, res.CallID, "")
		accepted <- err
	}()
	// A session waits for the call's row: the accept, at its read (or,
	// read unlocked, at its update).
	waitForLockOrDone(t, dsn, accepted)
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, calls.ErrCallEnded) {
		t.Errorf("accept of a call ended meanwhile: %v, want %v", err, calls.ErrCallEnded)
	}
	var state string
	if err := raw.QueryRow(`SELECT state FROM calls WHERE id = $1`, res.CallID).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "ended" {
		t.Errorf("call state %q after the accept, want ended: the accept wrote back the call it read before the end", state)
	}
}
