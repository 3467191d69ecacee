package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// The tests here open two stores on one database, as two nodes of a
// cluster would, and check what the single-process contract suite cannot:
// that what one node does in a transaction is seen, waited for or passed
// over by the other.

// openNodes opens n stores on one fresh database and returns them with
// the database's DSN.
func openNodes(t *testing.T, n int) ([]*postgres.Store, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	var nodes []*postgres.Store
	for range n {
		s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		nodes = append(nodes, s)
	}
	return nodes, dsn
}

// started returns the change creating a started call by caller (accepted,
// so busy) inviting invitees.
func started(id, caller string, invitees ...string) *calls.Change {
	c := &calls.Call{ID: id, Caller: caller, Mode: calls.ModeGeneral, State: calls.CallStarted,
		Timeout: 30, CreateTime: 1000,
		Users: []*calls.CallUser{{UserID: caller, State: calls.StateAccepted, UpdateTime: 1000, AcceptTime: 1000}}}
	ch := &calls.Change{Call: c, Created: true}
	for _, u := range invitees {
		c.Users = append(c.Users, &calls.CallUser{UserID: u, State: calls.StateInviting, Inviter: caller,
			UpdateTime: 1000, InviteTime: 1000, TimeoutAt: 31_000})
		ch.Events = append(ch.Events, calls.Event{UserID: u, CallID: id, Type: calls.EventReceived,
			Data: json.RawMessage(`{}`), Time: 1000})
	}
	return ch
}

// An unreachable server is "not now" (503), not an internal error.
func TestOpenUnreachableIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more
	_, err = postgres.Open(context.Background(), "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=5", postgres.Options{})
	if !errors.Is(err, calls.ErrUnavailable) {
		t.Fatalf("Open(%s) = %v, want calls.ErrUnavailable", addr, err)
	}
}

// The busy check of an invitation on one node waits for a transaction on
// another node that has written the invitee busy, and then sees it: the
// invitation is never written against a busy state that was about to
// change, as with SQLite's single writer.
func TestBusyCheckWaitsForAChangeMakingTheUserBusy(t *testing.T) {
	nodes, dsn := openNodes(t, 2)
	ctx := context.Background()
	saved, release := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- nodes[0].Update(ctx, func(tx calls.Tx) error {
			if err := tx.Save(ctx, started("c1", "bob", "carol")); err != nil {
				return err
			}
			// Save's writes go with the commit; a read after it sends
			// them first, and from then on this transaction holds bob's
			// row while it makes him busy.
			if _, err := tx.Call(ctx, "c1"); err != nil {
				return err
			}
			close(saved)
			<-release
			return nil
		})
	}()
	select {
	case <-saved:
	case err := <-aDone:
		t.Fatalf("node A's Update: %v", err)
	}
	type answer struct {
		busy []string
		err  error
	}
	bDone := make(chan answer, 1)
	go func() {
		var a answer
		a.err = nodes[1].Update(ctx, func(tx calls.Tx) (err error) {
			a.busy, err = tx.BusyUsers(ctx, []string{"bob"}, "c2")
			return err
		})
		bDone <- a
	}()
	// Node B either answers at once (wrong: bob's call is not committed
	// yet) or waits for a lock; only then is node A let to commit.
	waitForLockOrDone(t, dsn, bDone)
	close(release)
	if err := <-aDone; err != nil {
		t.Fatalf("node A's Update: %v", err)
	}
	got := <-bDone
	if got.err != nil || !slices.Equal(got.busy, []string{"bob"}) {
		t.Fatalf("BusyUsers(bob) on node B = %v (%v), want [bob]: the check must wait for node A's commit", got.busy, got.err)
	}
}

// waitForLockOrDone returns once a session of the database waits for a
// lock, or done has a value (put back for the caller), within 10 s.
func waitForLockOrDone[T any](t *testing.T, dsn string, done chan T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	wait.For(t, 10*time.Second, "a session waiting for a lock, or the update done", func() bool {
		select {
		case v := <-done:
			done <- v
			return true
		default:
		}
		var waiting int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting > 0
	})
}

// Two nodes draining one outbox at once never claim the same delivery
// (FOR UPDATE SKIP LOCKED and the lease), and together they claim it all.
func TestTwoNodesClaimDisjointDeliveries(t *testing.T) {
	nodes, _ := openNodes(t, 2)
	ctx := context.Background()
	e := &webhooks.Endpoint{ID: "ep", URL: "https://ep.example/hook", Secret: "whsec_ep", CreatedAt: 1}
	if err := nodes[0].PutWebhookEndpoint(ctx, e); err != nil {
		t.Fatal(err)
	}
	const total = 200
	for i := range total {
		ch := started(fmt.Sprintf("c%d", i), "alice")
		ch.Hooks = []calls.HookEvent{{Type: calls.HookCallCreated, CallID: ch.Call.ID, Data: json.RawMessage(`{}`), Time: 1000}}
		if err := nodes[i%2].Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[int64]int{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			s := nodes[w%2]
			for {
				got, err := s.ClaimWebhookDeliveries(ctx, webhooks.Claim{Now: 2000, LeaseUntil: 60_000, Limit: 7, Share: 7})
				if err != nil {
					t.Error(err)
					return
				}
				if len(got.Attempts) == 0 {
					return
				}
				mu.Lock()
				for _, a := range got.Attempts {
					seen[a.DeliveryID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != total {
		t.Errorf("%d deliveries claimed, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("delivery %d claimed %d times", id, n)
		}
	}
}

// The same Idempotency-Key sent to two nodes at once runs once: the
// others wait for the first and replay its answer.
func TestSameKeyOnTwoNodesRunsOnce(t *testing.T) {
	nodes, _ := openNodes(t, 2)
	svcs := []*calls.Service{calls.NewService(calls.Options{Store: nodes[0]}), calls.NewService(calls.Options{Store: nodes[1]})}
	alice := calls.Actor{UserID: "alice"}
	in := calls.InviteInput{Invitees: []string{"bob"}}
	encode := func(v any) (calls.StoredResponse, error) {
		b, err := json.Marshal(v)
		return calls.StoredResponse{Status: 201, ContentType: "application/json", Body: b}, err
	}
	var mu sync.Mutex
	var bodies []string
	fresh := 0
	var wg sync.WaitGroup
	for n := range 12 {
		wg.Go(func() {
			i := &calls.Idempotency{Scope: "alice POST /calls", Key: "k", Fingerprint: "fp", Now: 1000,
				ExpiresAt: 1000 + 86_400_000, Encode: encode}
			_, err := svcs[n%2].Invite(calls.WithIdempotency(context.Background(), i), alice, in)
			if err != nil {
				t.Errorf("Invite: %v", err)
				return
			}
			resp, replayed, ok := i.Response()
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				t.Error("no answer recorded")
				return
			}
			if !replayed {
				fresh++
			}
			bodies = append(bodies, string(resp.Body))
		})
	}
	wg.Wait()
	list, err := nodes[0].ListCalls(context.Background(), "alice", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || fresh != 1 {
		t.Fatalf("%d calls created, %d answers not replayed; want 1 and 1", len(list), fresh)
	}
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("answers differ: %s and %s", bodies[0], b)
		}
	}
}

// Two users inviting each other at the same instant on two nodes ("glare"),
// each busy check taken before either saves: without LockUsers each check
// holds the other user while its Save wants its own caller, PostgreSQL
// aborts one of the two as a deadlock, and Update runs that one's fn again
// (calls.Store.Update allows it): both commit, no 503. With LockUsers
// first (what calls.Service does) there is no deadlock at all: each fn
// runs once.
func TestGlare(t *testing.T) {
	for _, lockFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("lockUsersFirst=%v", lockFirst), func(t *testing.T) {
			nodes, _ := openNodes(t, 2)
			ctx := context.Background()
			var checked sync.WaitGroup
			checked.Add(2)
			var runs atomic.Int32
			invite := func(s *postgres.Store, id, caller, invitee string) error {
				first := true
				return s.Update(ctx, func(tx calls.Tx) error {
					runs.Add(1)
					if lockFirst {
						if err := tx.(calls.UserLocker).LockUsers(ctx, []string{caller, invitee}); err != nil {
							return err
						}
					}
					if _, err := tx.BusyUsers(ctx, []string{invitee}, id); err != nil {
						return err
					}
					if first && !lockFirst { // both checks are done before either saves
						first = false
						checked.Done()
						checked.Wait()
					}
					return tx.Save(ctx, started(id, caller, invitee))
				})
			}
			errs := make(chan error, 2)
			go func() { errs <- invite(nodes[0], "c1", "alice", "bob") }()
			go func() { errs <- invite(nodes[1], "c2", "bob", "alice") }()
			if err := errors.Join(<-errs, <-errs); err != nil {
				t.Fatalf("glare: %v, want both invitations committed", err)
			}
			want := int32(3) // the deadlock's victim ran twice
			if lockFirst {
				want = 2
			}
			if got := runs.Load(); got != want {
				t.Errorf("fn ran %d times in all, want %d", got, want)
			}
			for _, id := range []string{"c1", "c2"} {
				if _, err := nodes[0].Call(ctx, id); err != nil {
					t.Errorf("call %s: %v", id, err)
				}
			}
		})
	}
}
