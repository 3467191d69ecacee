package sqlite

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// The production queries of the pending-invitation lookups use the partial
// index of migration 0002, walked from the user's newest invitation: no
// scan of the user's events or history, no sort of what the index yields.
func TestInvitationQueryPlans(t *testing.T) {
	s := openTest(t)
	for _, q := range []struct {
		name, query string
		args        []any
	}{
		{"pending invitations", sqlPendingInvitations, []any{"u", 100}},
		{"unreceived invitations", sqlUnreceivedInvitations, []any{"u", 10, 100}},
	} {
		plan := queryPlan(t, s, q.query, q.args...)
		if !strings.Contains(plan, "USING INDEX call_users_invitations") ||
			strings.Contains(plan, "events_by_user") || strings.Contains(plan, "SCAN e") ||
			strings.Contains(plan, "TEMP B-TREE") {
			t.Errorf("%s: plan %q, want call_users_invitations, events by primary key, no sort", q.name, plan)
		}
	}
	if plan := queryPlan(t, s, `SELECT DISTINCT user_id FROM events WHERE id BETWEEN ? AND ? LIMIT ?`, 1, 2, 3); !strings.Contains(plan, "USING INTEGER PRIMARY KEY") {
		t.Errorf("event recipients: plan %q, want a range of the primary key", plan)
	}
}

// queryPlan returns the EXPLAIN QUERY PLAN details of query, joined by "; ".
func queryPlan(t *testing.T, s *Store, query string, args ...any) string {
	t.Helper()
	rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("explain %q: %v", query, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	return strings.Join(plan, "; ")
}

// The replay is capped to the newest invitations, and the invitations an
// invitee is still to receive are found below a bound.
func TestPendingInvitationsCapAndUnreceived(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var ids []int64
	for i := range 10 {
		ch := newCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob")
		save(t, s, ch)
		ids = append(ids, ch.Events[0].ID)
	}
	got, err := s.PendingInvitations(ctx, "bob", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != ids[7] || got[2].ID != ids[9] || got[0].CallID != "c7" {
		t.Fatalf("PendingInvitations(bob, 3) = %+v, want the newest three in id order", got)
	}

	// c3 was received, c4 timed out (its deadline cleared).
	err = s.Update(ctx, func(tx calls.Tx) error {
		for id, f := range map[string]func(u *calls.CallUser){
			"c3": func(u *calls.CallUser) { u.State = calls.StateReceived },
			"c4": func(u *calls.CallUser) { u.State, u.TimeoutAt = calls.StateTimeout, 0 },
		} {
			c, err := tx.Call(ctx, id)
			if err != nil {
				return err
			}
			f(c.User("bob"))
			markDirty(c.User("bob"))
			if err := tx.Save(ctx, &calls.Change{Call: c}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.UnreceivedInvitations(ctx, "bob", ids[5], 100)
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	for _, e := range got {
		calls = append(calls, e.CallID)
	}
	if strings.Join(calls, ",") != "c0,c1,c2,c5" {
		t.Fatalf("UnreceivedInvitations(bob, id of c5) = %v, want c0,c1,c2,c5", calls)
	}
	if got, _ := s.UnreceivedInvitations(ctx, "bob", ids[5], 2); len(got) != 1 || got[0].CallID != "c5" {
		t.Fatalf("UnreceivedInvitations limited to 2 = %+v, want c5 only (c4 is no longer live)", got)
	}
}

// manyPending gives user n pending invitations, each in its own call, and
// a history of other events (an invitation is followed by a few), the way
// the API would have written them. It writes straight through the writer:
// n Saves one by one would take minutes at FULL synchronous.
func manyPending(tb testing.TB, s *Store, user string, n int) {
	tb.Helper()
	err := s.write(context.Background(), func(tx *sqlx.Tx) error {
		for _, q := range []string{
			`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO calls (id, caller, mode, state, timeout, create_time)
			SELECT 'many-' || i, 'caller' || (i % 40), 'general', 'started', 600, 1000 FROM n`,
			`INSERT INTO events (user_id, call_id, type, data, time)
			SELECT ?, id, 'callInvitationReceived', '{"callID":"' || id || '"}', 1000 FROM calls WHERE id LIKE 'many-%' ORDER BY seq`,
			`INSERT INTO events (user_id, call_id, type, data, time)
			SELECT ?, id, 'callUserStateChanged', '{}', 1000 FROM calls WHERE id LIKE 'many-%' ORDER BY seq`,
			`INSERT INTO call_users (call_seq, user_id, ord, state, inviter, invite_time, timeout_at, invitation_event_id)
			SELECT c.seq, e.user_id, 1, 'inviting', c.caller, 1000, 601000, e.id
			FROM events e JOIN calls c ON c.id = e.call_id
			WHERE e.user_id = ? AND e.type = 'callInvitationReceived' AND e.call_id LIKE 'many-%'`,
		} {
			arg := any(user)
			if strings.HasPrefix(q, "WITH") {
				arg = n
			}
			if _, err := tx.Exec(q, arg); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// A user with 30,000 pending invitations: the capped replay and the
// re-derivation stay a few index steps. Figures in docs/benchmarks.md:
//
//	go test -run '^$' -bench Invitations -benchtime 2s ./db/
func BenchmarkInvitations(b *testing.B) {
	s := openTest(b)
	start := time.Now()
	manyPending(b, s, "bob", 30_000)
	b.Logf("30,000 pending invitations written in %v", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	last, err := s.LastEventID(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("pending-100-of-30000", func(b *testing.B) {
		for b.Loop() {
			list, err := s.PendingInvitations(ctx, "bob", 100)
			if err != nil || len(list) != 100 {
				b.Fatalf("%d invitations, %v", len(list), err)
			}
		}
	})
	b.Run("unreceived-100-of-30000", func(b *testing.B) {
		for b.Loop() {
			list, err := s.UnreceivedInvitations(ctx, "bob", last, 100)
			if err != nil || len(list) != 100 {
				b.Fatalf("%d invitations, %v", len(list), err)
			}
		}
	})
}

// Migration 0002 backfills the invitation event id of the invitations
// pending when it runs, so a stream opened right after the upgrade still
// replays them.
func TestMigration0002BackfillsPendingInvitations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	schema1, err := fs.ReadFile(migrationFiles, "migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateFS(ctx, raw, slog.New(slog.DiscardHandler), fstest.MapFS{"migrations/0001_init.sql": {Data: schema1}}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time) VALUES ('c1', 'alice', 'general', 'started', 600, 1000)`,
		`INSERT INTO events (user_id, call_id, type, data, time) VALUES ('bob', 'c1', 'callInvitationReceived', '{"callID":"c1"}', 1000)`,
		`INSERT INTO events (user_id, call_id, type, data, time) VALUES ('bob', 'c1', 'callUserStateChanged', '{}', 1000)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, timeout_at) VALUES (1, 'alice', 0, 'accepted', 0), (1, 'bob', 1, 'inviting', 601000)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s := openAt(t, path)
	got, err := s.PendingInvitations(ctx, "bob", 10)
	if err != nil || len(got) != 1 || got[0].ID != 1 || got[0].Type != calls.EventReceived {
		t.Fatalf("PendingInvitations after the upgrade = %+v (%v), want event 1", got, err)
	}
}
