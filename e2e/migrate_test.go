package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/sqlitetopg"
	"callsig/internal/pgtest"
	"callsig/internal/testkit"
)

// A node that outgrew its SQLite file moves to PostgreSQL with `callsig
// migrate` (db/sqlitetopg): a server started on the copy serves the same
// calls and cursors, resumes streams from their Last-Event-ID, fires the
// pending deadlines, retries the pending webhook delivery with the same
// secret and replays idempotent requests.
func TestMigrateSQLiteToPostgres(t *testing.T) {
	t.Parallel()
	s1 := testkit.Start(t, testkit.WithFakeClock())
	alice, bob, carol := s1.Client("alice"), s1.Client("bob"), s1.Client("carol")
	erin, gina, henry := s1.Client("erin"), s1.Client("gina"), s1.Client("henry")

	accepted := alice.Invite(nil, "bob").CallID
	bob.Action(accepted, "accept", nil).Want(http.StatusOK)
	rejected := alice.Invite(nil, "carol").CallID
	carol.Action(rejected, "reject", nil).Want(http.StatusOK)
	cancelled := alice.Invite(nil, "dave").CallID
	alice.Action(cancelled, "cancel", nil).Want(http.StatusOK)
	timedOut := alice.Invite(map[string]any{"timeout": 10}, "erin").CallID
	s1.Advance(11 * time.Second)
	waitCall(t, erin, timedOut, func(c testkit.Call) bool { return c.State == calls.CallEnded })

	advanced := alice.Invite(map[string]any{"mode": "advanced"}, "gina").CallID
	gina.Action(advanced, "accept", nil).Want(http.StatusOK)
	ginaLog := s1.Log("gina")
	resumeFrom := ginaLog[len(ginaLog)-1].ID // gina's client saw this much
	henry.Action(advanced, "join", nil).Want(http.StatusOK)
	henry.Action(advanced, "quit", nil).Want(http.StatusOK)

	alice.Header.Set("Idempotency-Key", "migrate-1")
	keyed := alice.Post("/calls", map[string]any{"invitees": []string{"ivan"}}).Want(http.StatusCreated)
	alice.Header.Del("Idempotency-Key")

	// The webhook's first attempt fails: its delivery is pending, due in 5 s.
	rcv := s1.NewReceiver()
	wh := s1.RegisterWebhook(rcv, "call.created")
	rcv.FailNext(1, http.StatusServiceUnavailable, nil)
	pending := alice.Invite(map[string]any{"timeout": 60}, "frank").CallID
	s1.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		return len(l) == 1 && l[0].Attempts == 1 && l[0].Status == "pending"
	})

	before := map[string][]string{}
	for _, u := range []string{"alice", "bob", "gina", "frank"} {
		before[u] = callPages(t, s1.Client(u))
	}
	var wantAfter []testkit.LoggedEvent
	for _, e := range s1.Log("gina") {
		if e.ID > resumeFrom {
			wantAfter = append(wantAfter, e)
		}
	}
	if len(wantAfter) < 2 {
		t.Fatalf("gina got %d events after %d, want join and quit", len(wantAfter), resumeFrom)
	}
	stoppedAt := s1.Clock.Now()
	s1.Stop()

	dsn := pgtest.NewDatabase(t)
	rep, err := sqlitetopg.Copy(context.Background(), s1.Config.DB, dsn, sqlitetopg.Options{Now: s1.Clock.Now})
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	counts := map[string]int64{}
	for _, c := range rep.Tables {
		counts[c.Table] = c.Rows
	}
	for table, want := range map[string]int64{"calls": 7, "webhook_endpoints": 1, "webhook_messages": 1,
		"webhook_deliveries": 1, "idempotency_keys": 1, "event_users": 9} {
		if counts[table] != want {
			t.Errorf("copied %d rows of %s, want %d (report %+v)", counts[table], table, want, rep.Tables)
		}
	}

	// A second copy into the same database is refused.
	if _, err := sqlitetopg.Copy(context.Background(), s1.Config.DB, dsn, sqlitetopg.Options{}); err == nil {
		t.Fatal("a copy into a non-empty database was accepted")
	}

	s2 := testkit.Start(t, testkit.WithDB(dsn), testkit.WithFakeClockAt(stoppedAt))
	for u, pages := range before {
		if got := callPages(t, s2.Client(u)); fmt.Sprint(got) != fmt.Sprint(pages) {
			t.Errorf("%s's calls after the move:\n%v\nbefore:\n%v", u, got, pages)
		}
	}

	// gina resumes where her client was: exactly the events after it.
	st := s2.Stream("gina", "", strconv.FormatInt(resumeFrom, 10))
	for _, want := range wantAfter {
		e := st.Next(10 * time.Second)
		if e.ID() != want.ID || e.Type != string(want.Type) {
			t.Fatalf("resumed stream gave %v, want event %d %s", e, want.ID, want.Type)
		}
	}
	// A new event gets an id past every copied one.
	alice = s2.Client("alice")
	alice.Action(advanced, "quit", nil).Want(http.StatusOK)
	if e := st.Next(10 * time.Second); e.ID() <= rep.LastEventID || e.CallID() != advanced {
		t.Fatalf("after the move gina got %v, want an event of %s with id above %d", e, advanced, rep.LastEventID)
	}
	// An id this server never gave is reset, as before.
	reset := s2.Stream("gina", "", strconv.FormatInt(rep.LastEventID+1000, 10))
	if e := reset.Next(10 * time.Second); e.Type != "reset" {
		t.Fatalf("unknown Last-Event-ID: got %v, want reset", e)
	}

	// The idempotent request replays its first answer.
	alice.Header.Set("Idempotency-Key", "migrate-1")
	again := alice.Post("/calls", map[string]any{"invitees": []string{"ivan"}}).Want(http.StatusCreated)
	if string(again.Body) != string(keyed.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay after the move: %s (replayed=%q), want %s", again.Body, again.Header.Get("Idempotent-Replayed"), keyed.Body)
	}
	alice.Header.Del("Idempotency-Key")

	// The pending delivery is retried, signed with the copied secret; the
	// pending invitation times out on the new server's timer.
	s2.Advance(61 * time.Second)
	got := rcv.WaitType("call.created", 2, func(d testkit.Delivery) bool { return d.Valid })
	var data struct {
		CallID string `json:"callID"`
	}
	got[1].Decode(t, &data)
	if data.CallID != pending || got[0].ID != got[1].ID {
		t.Fatalf("retried delivery %s for %s, want %s for %s", got[1].ID, data.CallID, got[0].ID, pending)
	}
	c := waitCall(t, s2.Client("frank"), pending, func(c testkit.Call) bool { return c.State == calls.CallEnded })
	if testkit.UserState(c, "frank") != calls.StateTimeout {
		t.Fatalf("pending invitation after the move: %+v", c)
	}
	s2.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		return len(l) == 1 && l[0].Attempts == 2 && l[0].Status == "delivered"
	})
}

// callPages lists c's calls two at a time, following nextFlag, and
// returns each page's body.
func callPages(t *testing.T, c *testkit.Client) []string {
	t.Helper()
	var pages []string
	next := int64(0)
	for range 20 {
		path := "/calls?count=2"
		if next > 0 {
			path += "&nextFlag=" + strconv.FormatInt(next, 10)
		}
		res := c.Get(path).Want(http.StatusOK)
		pages = append(pages, string(res.Body))
		var page struct {
			NextFlag int64 `json:"nextFlag"`
		}
		res.JSON(&page)
		if page.NextFlag == 0 {
			return pages
		}
		next = page.NextFlag
	}
	t.Fatalf("%s: more than 20 pages of calls", c.User)
	return nil
}
