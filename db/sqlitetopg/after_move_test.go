package sqlitetopg

import (
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/db/sqlite"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
)

// These stories run a server on SQLite, stop it, copy its file and start a
// server on the copy, as an operator moving up does, and check what the
// clients and calls see.

// waitUntil polls cond until it holds, failing after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client idle since its stream opened on SQLite holds the id its
// opening's id-only block carried: the global head of the log, above its
// own user's newest event when other users' events came after. It resumes
// on SQLite; after the move it must resume too (the docs promise clients
// keep their Last-Event-ID), not get a `reset`.
//
// The copy records where SQLite's ids end (the event_ids sequence's start,
// postgres.Store.MovedEventID), and a stream on PostgreSQL resumes from an
// id above the user's own newest when it is not above that (sse's expiry
// check): seeding event_users with SQLite's head instead would cost every
// idle stream a log read a second.
func TestIdleClientResumesAfterMove(t *testing.T) {
	s1 := testkit.Start(t, testkit.WithFakeClock())
	alice, bob := s1.Client("alice"), s1.Client("bob")
	c1 := alice.Invite(nil, "bob").CallID
	bob.Action(c1, "reject", nil).Want(http.StatusOK) // nothing left pending for bob
	for range 3 {
		alice.Invite(nil, "carol") // the head moves past bob's newest
	}
	st := s1.Stream("bob", "", "")
	var held string
	waitUntil(t, "id-only block", func() bool { held = st.LastEventID(); return held != "" })
	st.Close()
	var bobNewest int64
	for _, e := range s1.Log("bob") {
		bobNewest = max(bobNewest, e.ID)
	}
	if id, _ := strconv.ParseInt(held, 10, 64); id <= bobNewest {
		t.Fatalf("premise: bob's client holds %s, not above his newest event %d", held, bobNewest)
	}
	stoppedAt := s1.Clock.Now()
	s1.Stop()

	// On SQLite a restart resumes it.
	s0 := testkit.Start(t, testkit.WithDB(s1.Config.DB), testkit.WithFakeClockAt(stoppedAt))
	st0 := s0.Stream("bob", "", held)
	if e, ok := st0.TryNext(time.Second); ok && e.Type == "reset" {
		t.Fatalf("premise: on SQLite the idle client was reset: %v", e)
	}
	st0.Close()
	s0.Stop()

	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(context.Background(), s1.Config.DB, dsn, Options{Now: s1.Clock.Now}); err != nil {
		t.Fatal(err)
	}
	s2 := testkit.Start(t, testkit.WithDB(dsn), testkit.WithFakeClockAt(stoppedAt))
	st2 := s2.Stream("bob", "", held)
	defer st2.Close()
	// A positive marker: a new invitation to bob must be the first thing
	// his resumed stream reads, not a reset.
	c2 := s2.Client("alice").Invite(nil, "bob").CallID
	if e := st2.Next(5 * time.Second); e.Type == "reset" || e.CallID() != c2 {
		t.Errorf("after the move bob's idle client (Last-Event-ID %s, his newest event %d) first read %s %v, want the new invitation to %s",
			held, bobNewest, e.Type, e.Data, c2)
	}
}

// A caller offline at the stop, its grace armed, gets a fresh grace from
// the first node's start after the move, as a SQLite restart gives it:
// PostgreSQL nodes keep a grace already armed at their start (presence
// outlives a node there), so the copied deadline, passed while the move
// took longer than the grace, would end the call the moment the node
// starts, before the caller could reconnect.
func TestCallerOfflineAtStopGetsFreshGraceAfterMove(t *testing.T) {
	s1 := testkit.Start(t, testkit.WithFakeClock())
	st := s1.Stream("alice", "", "")
	waitUntil(t, "id-only block", func() bool { return st.LastEventID() != "" })
	callID := s1.Client("alice").Invite(map[string]any{"timeout": 600}, "bob").CallID // tracked
	st.Close()
	raw, err := sql.Open("sqlite", s1.Config.DB)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "grace armed on SQLite", func() bool {
		var at int64
		err := raw.QueryRow(`SELECT caller_offline_at FROM calls WHERE id = ?`, callID).Scan(&at)
		return err == nil && at != 0
	})
	raw.Close()
	stoppedAt := s1.Clock.Now()
	s1.Stop()

	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(ctx, s1.Config.DB, dsn, Options{Now: s1.Clock.Now}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The move took two minutes, four graces.
	startedAt := stoppedAt.Add(2 * time.Minute)
	s2 := testkit.Start(t, testkit.WithDB(dsn), testkit.WithFakeClockAt(startedAt))
	grace := s2.Config.HeartbeatTimeout
	want := startedAt.Add(grace).UnixMilli()
	var state string
	var at int64
	var matters bool
	waitUntil(t, "grace armed by the first node", func() bool {
		err := conn.QueryRow(ctx, `SELECT state, caller_offline_at, presence_matters FROM calls WHERE id = $1`, callID).Scan(&state, &at, &matters)
		if err != nil {
			t.Fatal(err)
		}
		if state != string(calls.CallStarted) {
			t.Fatalf("the call %s as the first node started, before alice could reconnect: %+v", state, s2.Client("bob").GetCall(callID))
		}
		return at == want
	})
	if !matters {
		t.Fatal("presence_matters is false for a tracked started call (calls.PresenceMatters says true)")
	}
	// That grace ends it, as it would have on SQLite.
	s2.Advance(grace + time.Second)
	waitUntil(t, "the call ended by the grace", func() bool {
		return s2.Client("bob").GetCall(callID).State == calls.CallEnded
	})
}

// A delivery leased by the node when it stopped (a crash: no release) is
// copied with its lease: no node on PostgreSQL attempts it before the
// lease ends, and one does once it ended, under the same webhook-id.
func TestLeasedDeliveryWaitsForItsLeaseAfterMove(t *testing.T) {
	s1 := testkit.Start(t, testkit.WithFakeClock())
	rcv := s1.NewReceiver()
	wh := s1.RegisterWebhook(rcv, "call.created")
	rcv.FailNext(1, http.StatusServiceUnavailable, nil)
	s1.Client("alice").Invite(map[string]any{"timeout": 600}, "bob")
	s1.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		return len(l) == 1 && l[0].Attempts == 1 && l[0].Status == "pending"
	})
	stoppedAt := s1.Clock.Now()
	s1.Stop()
	// As a crash mid-attempt leaves it: leased for 60 s more, due now.
	execSQLite(t, s1.Config.DB, stmt{`UPDATE webhook_deliveries SET locked_until = ?, next_attempt_at = ?`,
		[]any{stoppedAt.Add(60 * time.Second).UnixMilli(), stoppedAt.UnixMilli()}})
	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(context.Background(), s1.Config.DB, dsn, Options{Now: s1.Clock.Now}); err != nil {
		t.Fatal(err)
	}
	s2 := testkit.Start(t, testkit.WithDB(dsn), testkit.WithFakeClockAt(stoppedAt))
	rcv.Quiet(2 * time.Second)
	if n := len(rcv.Deliveries()); n != 1 {
		t.Fatalf("%d attempts reached the receiver before the lease ended, want only the first, failed one", n)
	}
	s2.Advance(61 * time.Second)
	got := rcv.WaitType("call.created", 2, func(d testkit.Delivery) bool { return d.Valid })
	if got[0].ID != got[1].ID {
		t.Fatalf("the retry has webhook-id %s, the first attempt %s", got[1].ID, got[0].ID)
	}
	l := s2.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		return len(l) == 1 && l[0].Status == "delivered"
	})
	if l[0].Attempts != 2 {
		t.Fatalf("attempts %d, want 2", l[0].Attempts)
	}
}

// A client holding an id SQLite gave, below where SQLite's ids ended, is
// told to reset after the move when the log kept nothing (pruned past its
// retention before the move): its user may have had events after that id,
// gone now, as SQLite itself says. Its user has no id on PostgreSQL (head
// 0), and the check used to compare with that head only: the client
// resumed and silently skipped what it had missed.
func TestEmptyLogAfterMoveResets(t *testing.T) {
	s1 := testkit.Start(t, testkit.WithFakeClock())
	c1 := s1.Client("alice").Invite(nil, "bob").CallID
	held := s1.Log("bob")[0].ID // bob's client has his first event only
	s1.Client("bob").Action(c1, "reject", nil).Want(http.StatusOK)
	stoppedAt := s1.Clock.Now()
	s1.Stop()
	execSQLite(t, s1.Config.DB, stmt{q: `DELETE FROM events`}) // pruned past the retention
	h := strconv.FormatInt(held, 10)

	s0 := testkit.Start(t, testkit.WithDB(s1.Config.DB), testkit.WithFakeClockAt(stoppedAt))
	st0 := s0.Stream("bob", "", h)
	e0, ok := st0.TryNext(2 * time.Second)
	st0.Close()
	s0.Stop()
	if !ok || e0.Type != "reset" {
		t.Fatalf("premise: on SQLite bob's client resuming from %s read %v, want reset", h, e0.Type)
	}

	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(context.Background(), s1.Config.DB, dsn, Options{Now: s1.Clock.Now}); err != nil {
		t.Fatal(err)
	}
	s2 := testkit.Start(t, testkit.WithDB(dsn), testkit.WithFakeClockAt(stoppedAt))
	st2 := s2.Stream("bob", "", h)
	defer st2.Close()
	if e, ok := st2.TryNext(5 * time.Second); !ok || e.Type != "reset" {
		t.Fatalf("after the move bob's client resuming from %s read ok=%v %q, want reset", h, ok, e.Type)
	}
}

// A backup restored by moving it to PostgreSQL keeps its restore's gap
// (db.RestoreMarkType): a client that saw an event the backed-up node gave
// after the backup is reset on the cluster, as it is on SQLite.
func TestRestoredBackupMovedKeepsItsGap(t *testing.T) {
	s1 := testkit.Start(t)
	alice := s1.Client("alice")
	bob := s1.Stream("bob", "", "")
	kept := alice.Invite(map[string]any{"timeout": 600}, "bob").CallID
	bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == kept }, 10*time.Second)
	out := filepath.Join(t.TempDir(), "backup.db")
	rep, err := sqlite.Backup(context.Background(), s1.Config.DB, out, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lost := alice.Invite(nil, "bob").CallID
	held := bob.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == lost }, 10*time.Second).ID()
	if held <= rep.LastEventID {
		t.Fatalf("premise: bob's event after the backup has id %d, the backup's last is %d", held, rep.LastEventID)
	}
	s1.Stop()

	dsn := pgtest.NewDatabase(t)
	if _, err := Copy(context.Background(), out, dsn, Options{}); err != nil {
		t.Fatal(err)
	}
	s2 := testkit.Start(t, testkit.WithDB(dsn))
	st := s2.Stream("bob", "", strconv.FormatInt(held, 10))
	defer st.Close()
	if e := st.Next(5 * time.Second); e.Type != "reset" {
		t.Fatalf("bob resumed from %d on the moved backup: got %v, want reset", held, e)
	}
	if e := st.Next(5 * time.Second); e.Type != string(calls.EventReceived) || e.CallID() != kept {
		t.Fatalf("bob after the reset: got %v, want the pending invitation of %s", e, kept)
	}

	// The cluster runs and is lost; the same backup is moved again. bob's
	// client holds an id the first cluster gave: in the new one's gap.
	again := s2.Client("alice").Invite(nil, "bob").CallID
	held = st.WaitFor(string(calls.EventReceived), func(e testkit.Event) bool { return e.CallID() == again }, 10*time.Second).ID()
	s2.Stop()
	dsn2 := pgtest.NewDatabase(t)
	if _, err := Copy(context.Background(), out, dsn2, Options{}); err != nil {
		t.Fatal(err)
	}
	s3 := testkit.Start(t, testkit.WithDB(dsn2))
	for range 3 { // bob's newest id passes the one he holds, were ids given again
		s3.Client("alice").Invite(nil, "bob")
	}
	st3 := s3.Stream("bob", "", strconv.FormatInt(held, 10))
	defer st3.Close()
	if e := st3.Next(5 * time.Second); e.Type != "reset" {
		t.Fatalf("bob resumed from %d, given by the first cluster moved from the backup, on the second: got %v, want reset", held, e)
	}
}
