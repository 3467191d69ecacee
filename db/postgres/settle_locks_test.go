package postgres_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"callsig/calls"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// An action that fires its call's past-due deadlines first (calls'
// settle) locks the users it may add (a joiner, invitees) with the call's,
// in one order. Locked in a statement of their own after the call's, they
// were taken out of order, and PostgreSQL found a deadlock (aborting one
// side after deadlock_timeout) with a change over the same users: here b's
// invitation of z, queued on b's row first, against b's join of z's call
// (a review: about half of the runs). Nothing due, the same two never
// deadlocked; with the users locked together, neither does this.
func TestSettlingActionLocksItsUsersInOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(svc *calls.Service, callID string) error
	}{
		{"join", func(svc *calls.Service, id string) error {
			_, err := svc.Join(context.Background(), calls.Actor{UserID: "b", Device: "default"}, id, "")
			return err
		}},
		{"calling invite", func(svc *calls.Service, id string) error {
			_, err := svc.CallingInvite(context.Background(), calls.Actor{UserID: "m", Device: "default"}, id, calls.CallingInviteInput{Invitees: []string{"b"}})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 4 {
				settleAgainstAnInvitation(t, tc.act)
			}
		})
	}
}

func settleAgainstAnInvitation(t *testing.T, act func(svc *calls.Service, callID string) error) {
	t.Helper()
	nodes, dsn := openNodes(t, 2)
	ctx := context.Background()
	clock := fakeclock.New(time.UnixMilli(1_767_225_600_000))
	a := calls.NewService(calls.Options{Store: nodes[0], Clock: clock})
	b := calls.NewService(calls.Options{Store: nodes[1], Clock: clock})
	res, err := a.Invite(ctx, calls.Actor{UserID: "m", Device: "default"}, calls.InviteInput{Invitees: []string{"z"}, Mode: calls.ModeAdvanced, Timeout: 1})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second) // z's timeout is past due; no scheduler runs

	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	deadlocks := func() (n int64) {
		if err := raw.QueryRow(`SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waiting := func(n int) {
		t.Helper()
		wait.For(t, 10*time.Second, "lock waiters", func() bool {
			var k int
			err := raw.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&k)
			return err == nil && k >= n
		})
	}
	before := deadlocks()
	// b's row held, so b's invitation of z queues on it first, and the
	// action, which settles z's timeout and then wants b, second.
	holder, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback() //nolint:errcheck // committed below
	if _, err := holder.Exec(`INSERT INTO event_users (user_id, last_id) VALUES ('b', 0)
		ON CONFLICT (user_id) DO UPDATE SET last_id = event_users.last_id`); err != nil {
		t.Fatal(err)
	}
	invited := make(chan error, 1)
	go func() {
		_, err := b.Invite(ctx, calls.Actor{UserID: "b", Device: "default"}, calls.InviteInput{Invitees: []string{"z"}})
		invited <- err
	}()
	waiting(1)
	acted := make(chan error, 1)
	go func() { acted <- act(a, res.CallID) }()
	waiting(2)
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-invited; err != nil {
		t.Errorf("b's invitation: %v", err)
	}
	if err := <-acted; err != nil {
		t.Errorf("the settling action: %v", err)
	}
	if d := deadlocks() - before; d > 0 {
		t.Errorf("%d deadlock(s) between a settling action and an invitation over the same users", d)
	}
}
