package postgres

import (
	"context"
	"fmt"
	"testing"
)

// An answer settles call.missed only since 0ead6cf (PostgreSQL migration
// 0006's commit, no schema change of its own); before it, a server left
// missed_time 0 for users who accepted or rejected, so after an upgrade
// such a user, invited again in a started call and left unanswered, got
// the call.missed the rule forbids. 0010 settles them (SQLite's 0012);
// the caller, a pending invitee and users of ended calls stay as they are.
func TestMigration0010SettlesMissedForAnsweredUsers(t *testing.T) {
	ctx := context.Background()
	dsn, raw := schemaBefore(t, 6)
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time) VALUES ('live', 'alice', 'advanced', 'started', 600, 1000, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, update_time, accept_time, timeout_at)
			SELECT c.seq, v.user_id, v.ord, v.state, v.update_time, v.accept_time, v.timeout_at
			FROM (VALUES ('alice', 0, 'accepted', 1000, 1000, 0), ('bob', 1, 'accepted', 1500, 1500, 0),
				('carol', 2, 'rejected', 1600, 0, 0), ('erin', 3, 'quit', 1900, 1700, 0)
			) AS v (user_id, ord, state, update_time, accept_time, timeout_at)
			JOIN calls c ON c.id = 'live'`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rows []struct {
		User   string `db:"user_id"`
		Missed int64  `db:"missed_time"`
	}
	if err := s.db.SelectContext(ctx, &rows, `SELECT user_id, missed_time FROM call_users ORDER BY ord`); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rows)
	if want := "[{alice 0} {bob 1500} {carol 1600} {erin 1900}]"; got != want {
		t.Fatalf("missed_time after the upgrade %s, want %s ", got, want)
	}
}
