package sqlite

import (
	"context"
	"errors"
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
//	go test -run '^$' -bench Invitations -benchtime 2s ./db/sqlite/
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

// withPending opens a store where user has n pending invitations
// (manyPending) and returns it with the last event id.
func withPending(tb testing.TB, user string, n int) (*Store, int64) {
	tb.Helper()
	s := openTest(tb)
	manyPending(tb, s, user, n)
	last, err := s.LastEventID(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return s, last
}

// Every read of the event log runs its prepared statement: as text, the
// driver would parse it on each run, most of a stream opening's reads.
func TestEventLogReadsRunPrepared(t *testing.T) {
	s, last := withPending(t, "bob", 2)
	ctx := context.Background()
	before, hits := s.unprepared.Load(), s.prepared.Load()
	if list, err := s.EventsAfter(ctx, "bob", 0, 100); err != nil || len(list) != 4 {
		t.Fatalf("EventsAfter: %d events, %v", len(list), err)
	}
	if list, err := s.PendingInvitations(ctx, "bob", 100); err != nil || len(list) != 2 {
		t.Fatalf("PendingInvitations: %d, %v", len(list), err)
	}
	if list, err := s.UnreceivedInvitations(ctx, "bob", last, 100); err != nil || len(list) != 2 {
		t.Fatalf("UnreceivedInvitations: %d, %v", len(list), err)
	}
	if users, _, err := s.EventRecipients(ctx, 1, last, 10); err != nil || len(users) != 1 {
		t.Fatalf("EventRecipients: %v, %v", users, err)
	}
	if id, err := s.OldestEventID(ctx); err != nil || id != 1 {
		t.Fatalf("OldestEventID: %d, %v", id, err)
	}
	if n := s.unprepared.Load() - before; n != 0 {
		t.Fatalf("%d of the event log's reads ran as SQL text, not prepared", n)
	}
	if n := s.prepared.Load() - hits; n != 5 {
		t.Fatalf("%d reads ran prepared, want the 5 made", n)
	}
}

// The reads a stream's opening runs, for a user with 3 pending
// invitations: the replay after a Last-Event-ID, the invitations to
// report delivered again, those a stream without one replays, the oldest
// id kept. A restart has every stream open again at once, so their cost
// is what a node pays for a reconnection storm. Figures in
// docs/benchmarks.md:
//
//	go test -run '^$' -bench StreamOpening -benchtime 2s ./db/sqlite/
func BenchmarkStreamOpening(b *testing.B) {
	s, last := withPending(b, "bob", 3)
	ctx := context.Background()
	b.Run("events-after", func(b *testing.B) {
		for b.Loop() {
			if list, err := s.EventsAfter(ctx, "bob", last-2, 100); err != nil || len(list) != 2 {
				b.Fatalf("%d events, %v", len(list), err)
			}
		}
	})
	b.Run("unreceived", func(b *testing.B) {
		for b.Loop() {
			if list, err := s.UnreceivedInvitations(ctx, "bob", last, 100); err != nil || len(list) != 3 {
				b.Fatalf("%d invitations, %v", len(list), err)
			}
		}
	})
	b.Run("pending", func(b *testing.B) {
		for b.Loop() {
			if list, err := s.PendingInvitations(ctx, "bob", 100); err != nil || len(list) != 3 {
				b.Fatalf("%d invitations, %v", len(list), err)
			}
		}
	})
	b.Run("oldest", func(b *testing.B) {
		for b.Loop() {
			if id, err := s.OldestEventID(ctx); err != nil || id != 1 {
				b.Fatalf("oldest %d, %v", id, err)
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

// A read of the event log after Close is unavailable (db.ErrClosed), as
// a busy or failing disk is: a stream retries it, rather than ending as
// on a defect.
func TestEventLogReadAfterCloseIsUnavailable(t *testing.T) {
	s := openTest(t)
	manyPending(t, s, "bob", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EventsAfter(context.Background(), "bob", 0, 10); !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("EventsAfter after Close = %v, want calls.ErrUnavailable", err)
	}
}
