package sqlite

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"testing/fstest"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db/storetest"
)

// The busy column follows the calls through the real transitions: a user is
// busy while accepted in a started call, and no longer once that call ends,
// even when the ending transition did not touch the user's row.
func TestBusyUsers(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	cfg := calls.Config{MaxCallUsers: 10}
	// busyOf asks for ids at once, and for each alone (a statement of its
	// own, the usual one-invitee invitation): both must agree.
	busyOf := func(except string, ids ...string) []string {
		t.Helper()
		var got []string
		err := s.Update(ctx, func(tx calls.Tx) (err error) {
			if got, err = tx.BusyUsers(ctx, ids, except); err != nil {
				return err
			}
			for _, id := range ids {
				one, err := tx.BusyUsers(ctx, []string{id}, except)
				if err != nil {
					return err
				}
				if want := slices.Contains(got, id); (len(one) == 1 && one[0] == id) != want || len(one) > 1 {
					t.Errorf("%s alone: busy %v; among %v: %t", id, one, ids, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	step := func(ch *calls.Change, err error) *calls.Call {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		storetest.Save(t, s, ch)
		c, err := s.Call(ctx, ch.Call.ID)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	create := func(id string, mode calls.Mode, invitees ...string) *calls.Call {
		t.Helper()
		ch, _, err := calls.NewCall(id, calls.Actor{UserID: "alice"}, calls.InviteInput{Mode: mode, Invitees: invitees}, 1_000, cfg, false, nil)
		return step(ch, err)
	}
	everyone := []string{"alice", "bob", "carol", "dave"}

	adv := create("advanced-call-000001", calls.ModeAdvanced, "bob", "carol")
	if got := busyOf("", everyone...); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("after create: busy %v, want the caller only (pending invitees are not busy)", got)
	}
	adv = step(calls.Answer(adv, calls.Actor{UserID: "bob", Device: "phone"}, true, "", 2_000))
	if got := busyOf("", everyone...); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("after bob accepted: busy %v, want [alice bob]", got)
	}
	if got := busyOf(adv.ID, everyone...); len(got) != 0 {
		t.Fatalf("busy in other calls than %s: %v, want none", adv.ID, got)
	}
	if got := busyOf("", "carol", "dave"); len(got) != 0 {
		t.Fatalf("busy among carol, dave: %v", got)
	}

	// A general call: dave accepted while erin is still pending keeps it
	// started, so dave is busy; erin's reject ends it, and frees dave
	// though his row is not part of that change.
	gen := create("general-call-0000001", calls.ModeGeneral, "dave", "erin")
	gen = step(calls.Answer(gen, calls.Actor{UserID: "dave"}, true, "", 3_000))
	if got := busyOf("", "dave", "erin"); !slices.Equal(got, []string{"dave"}) {
		t.Fatalf("general call with erin pending: busy %v, want [dave]", got)
	}
	gen = step(calls.Answer(gen, calls.Actor{UserID: "erin"}, false, "", 4_000))
	if gen.State != calls.CallEnded {
		t.Fatalf("general call %s, want ended", gen.State)
	}
	if got := busyOf("", "dave", "erin"); len(got) != 0 {
		t.Fatalf("after the general call ended: busy %v, want none", got)
	}
	if got := busyOf("", "alice"); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("alice, still in the advanced call: busy %v", got)
	}

	// End frees everyone in the call.
	step(calls.End(adv, calls.Actor{UserID: "bob", Device: "phone"}, calls.LeaveInput{}, 5_000))
	if got := busyOf("", everyone...); len(got) != 0 {
		t.Fatalf("after end: busy %v, want none", got)
	}
	if n := count(t, s, "call_users WHERE busy = 1"); n != 0 {
		t.Fatalf("%d rows still busy", n)
	}
}

// MissedTime survives a save and a load: it is what keeps call.missed to
// one per invitee per call across requests.
func TestMissedTimeRoundTrip(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	ch, _, err := calls.NewCall("missed-call-00000001", calls.Actor{UserID: "alice"}, calls.InviteInput{Mode: calls.ModeAdvanced, Invitees: []string{"bob", "carol"}}, 1_000, calls.Config{MaxCallUsers: 10}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	storetest.Save(t, s, ch)
	c, err := s.Call(ctx, ch.Call.ID)
	if err != nil {
		t.Fatal(err)
	}
	ch = calls.Expire(c, calls.Deadline{CallID: c.ID, UserID: "bob", Kind: calls.DeadlineTimeout}, 1_000+90_000)
	storetest.Save(t, s, ch)
	if c, err = s.Call(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if got := c.User("bob").MissedTime; got != 91_000 {
		t.Fatalf("bob's missed time %d, want 91000", got)
	}
	if got := c.User("carol").MissedTime; got != 0 {
		t.Fatalf("carol's missed time %d, want 0", got)
	}
}

// The busy check runs inside the invitation's write transaction: it sees a
// change saved earlier in the same transaction (or batch), not only what
// was committed before it began.
func TestBusyUsersSeesTheTransaction(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	ch, _, err := calls.NewCall("same-tx-call-0000001", calls.Actor{UserID: "alice"}, calls.InviteInput{Invitees: []string{"bob", "carol"}}, 1_000, calls.Config{MaxCallUsers: 10}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	storetest.Save(t, s, ch)
	err = s.Update(ctx, func(tx calls.Tx) error {
		c, err := tx.Call(ctx, ch.Call.ID)
		if err != nil {
			return err
		}
		accepted, err := calls.Answer(c, calls.Actor{UserID: "bob"}, true, "", 2_000)
		if err != nil {
			return err
		}
		if err := tx.Save(ctx, accepted); err != nil {
			return err
		}
		busy, err := tx.BusyUsers(ctx, []string{"bob", "carol"}, "another-call")
		if err == nil && !slices.Equal(busy, []string{"bob"}) {
			t.Errorf("busy in the same transaction: %v, want [bob]", busy)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Migration 0005 marks the users accepted in calls started when it runs as
// busy, and no one else: an upgrade must not forget who is on a call.
func TestMigration0005BackfillsBusy(t *testing.T) {
	ctx := context.Background()
	path, raw := schemaBefore(t, "0005")
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time) VALUES ('live', 'alice', 'advanced', 'started', 600, 1000)`,
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time) VALUES ('over', 'carol', 'general', 'ended', 600, 1000, 2000)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, accept_time, timeout_at) VALUES
			(1, 'alice', 0, 'accepted', 1000, 0), (1, 'bob', 1, 'accepted', 1500, 0), (1, 'dave', 2, 'inviting', 0, 601000),
			(2, 'carol', 0, 'accepted', 1000, 0), (2, 'erin', 1, 'accepted', 1500, 0)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s := openAt(t, path)
	var busy []string
	err := s.Update(ctx, func(tx calls.Tx) (err error) {
		busy, err = tx.BusyUsers(ctx, []string{"alice", "bob", "carol", "dave", "erin"}, "")
		return err
	})
	if err != nil || !slices.Equal(busy, []string{"alice", "bob"}) {
		t.Fatalf("busy after the upgrade = %v (%v), want [alice bob]", busy, err)
	}
}

// Migration 0012 settles call.missed for the users who answered before
// 0005 added missed_time (as 0 for every row): one who had accepted,
// joined or rejected in a call still started, invited again and left
// unanswered, got a call.missed the rule forbids. Not the caller (its
// accept_time is the creation, no answer), a pending invitee, or a user of
// an ended call.
func TestMigration0012SettlesMissedForAnsweredUsers(t *testing.T) {
	path, raw := schemaBefore(t, "0005")
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time) VALUES ('live', 'alice', 'advanced', 'started', 600, 1000)`,
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time) VALUES ('over', 'carol', 'general', 'ended', 600, 1000, 2000)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, update_time, accept_time, timeout_at) VALUES
			(1, 'alice', 0, 'accepted', 1000, 1000, 0), (1, 'bob', 1, 'accepted', 1500, 1500, 0),
			(1, 'carol', 2, 'rejected', 1600, 0, 0), (1, 'dave', 3, 'inviting', 1000, 0, 601000),
			(1, 'erin', 4, 'quit', 1900, 1700, 0),
			(2, 'carol', 0, 'accepted', 1000, 1000, 0), (2, 'frank', 1, 'accepted', 1500, 1500, 0)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	openAt(t, path)
	check, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	var rows []struct {
		Call   int64  `db:"call_seq"`
		User   string `db:"user_id"`
		Missed int64  `db:"missed_time"`
	}
	if err := check.Select(&rows, `SELECT call_seq, user_id, missed_time FROM call_users ORDER BY call_seq, ord`); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"1/alice": 0, "1/bob": 1500, "1/carol": 1600, "1/dave": 0, "1/erin": 1900, "2/carol": 0, "2/frank": 0}
	for _, r := range rows {
		k := fmt.Sprintf("%d/%s", r.Call, r.User)
		if r.Missed != want[k] {
			t.Errorf("%s: missed_time %d after the upgrade, want %d", k, r.Missed, want[k])
		}
	}
}

// Migrations 0007 and 0008 mark the started calls their caller's presence
// can change (calls.PresenceMatters) and no others: an upgrade must not
// hide a tracked or pending call from the caller-offline rule (0008: nor
// one only an uninvited joiner accepted).
func TestMigrations0007And0008BackfillPresence(t *testing.T) {
	path, raw := schemaBefore(t, "0007")
	// storetest.PresenceFixture, seq 1 to 7.
	for _, q := range []string{
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time, caller_tracked, caller_offline_at) VALUES
			('tracked-pending', 'alice', 'advanced', 'started', 600, 1000, 0, 1, 0),
			('untracked-pending', 'alice', 'advanced', 'started', 600, 1000, 0, 0, 0),
			('dormant', 'alice', 'advanced', 'started', 600, 1000, 0, 0, 0),
			('accepted', 'alice', 'advanced', 'started', 600, 1000, 0, 1, 0),
			('armed', 'alice', 'advanced', 'started', 600, 1000, 0, 1, 9000),
			('ended', 'alice', 'general', 'ended', 600, 1000, 2000, 1, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, accept_time, timeout_at) VALUES
			(1, 'alice', 0, 'accepted', 1000, 0), (1, 'bob', 1, 'inviting', 0, 601000),
			(2, 'alice', 0, 'accepted', 1000, 0), (2, 'bob', 1, 'received', 0, 601000),
			(3, 'alice', 0, 'accepted', 1000, 0), (3, 'bob', 1, 'timeout', 0, 0),
			(4, 'alice', 0, 'accepted', 1000, 0), (4, 'bob', 1, 'accepted', 1500, 0),
			(5, 'alice', 0, 'accepted', 1000, 0), (5, 'bob', 1, 'timeout', 0, 0),
			(6, 'alice', 0, 'accepted', 1000, 0), (6, 'bob', 1, 'inviting', 0, 0)`,
		// 7 tracked, bob timed out, dave joined uninvited (0008: no invitee).
		`INSERT INTO calls (id, caller, mode, state, timeout, create_time, end_time, caller_tracked, caller_offline_at) VALUES
			('joined', 'alice', 'advanced', 'started', 600, 1000, 0, 1, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, inviter, accept_time, timeout_at) VALUES
			(7, 'alice', 0, 'accepted', '', 1000, 0), (7, 'bob', 1, 'timeout', 'alice', 0, 0),
			(7, 'dave', 2, 'accepted', 'dave', 1200, 0)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	s := openAt(t, path)
	storetest.CheckPresenceBackfill(t, s)
}

// schemaBefore makes a database file with the migrations numbered below
// version applied, as a server of that time left it, and returns its path
// and a connection to fill it (close it before opening the store, which
// applies the rest).
func schemaBefore(t *testing.T, version string) (string, *sqlx.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "old.db")
	raw, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{}
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() >= version {
			continue
		}
		b, err := fs.ReadFile(migrationFiles, "migrations/"+e.Name())
		if err != nil {
			t.Fatal(err)
		}
		old["migrations/"+e.Name()] = &fstest.MapFile{Data: b}
	}
	if err := migrateFS(context.Background(), raw, slog.New(slog.DiscardHandler), old); err != nil {
		t.Fatal(err)
	}
	return path, raw
}
