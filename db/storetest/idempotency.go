package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
)

func record(scope, key, fp string, status int, body string, created, expires int64) calls.IdempotencyRecord {
	return calls.IdempotencyRecord{Scope: scope, Key: key, Fingerprint: fp,
		Response:  calls.StoredResponse{Status: status, ContentType: "application/json", Body: []byte(body)},
		CreatedAt: created, ExpiresAt: expires}
}

func testIdempotencyLookupAndPut(t *testing.T, s db.Store) {
	ctx := context.Background()
	if rec, err := s.LookupIdempotency(ctx, "alice POST /calls", "k1", 1000); err != nil || rec != nil {
		t.Fatalf("empty lookup = %+v, %v", rec, err)
	}
	if ok, err := s.PutIdempotency(ctx, record("alice POST /calls", "k1", "fp1", 403, `{"a":1}`, 1000, 5000)); err != nil || !ok {
		t.Fatalf("first Put = %v, %v", ok, err)
	}
	rec, err := s.LookupIdempotency(ctx, "alice POST /calls", "k1", 4999)
	if err != nil || rec == nil || rec.Fingerprint != "fp1" || rec.Response.Status != 403 ||
		rec.Response.ContentType != "application/json" || string(rec.Response.Body) != `{"a":1}` ||
		rec.CreatedAt != 1000 || rec.ExpiresAt != 5000 || rec.Scope != "alice POST /calls" || rec.Key != "k1" {
		t.Fatalf("lookup = %+v, %v", rec, err)
	}
	// A live record is never overwritten.
	if ok, err := s.PutIdempotency(ctx, record("alice POST /calls", "k1", "fp2", 201, `{}`, 2000, 9000)); err != nil || ok {
		t.Fatalf("Put over a live record = %v, %v", ok, err)
	}
	// Other scopes do not see the key.
	if rec, _ := s.LookupIdempotency(ctx, "bob POST /calls", "k1", 2000); rec != nil {
		t.Fatalf("other scope sees %+v", rec)
	}
	// An expired record is invisible and replaced.
	if rec, _ := s.LookupIdempotency(ctx, "alice POST /calls", "k1", 5000); rec != nil {
		t.Fatalf("expired record visible: %+v", rec)
	}
	if ok, err := s.PutIdempotency(ctx, record("alice POST /calls", "k1", "fp3", 201, `{}`, 5000, 9000)); err != nil || !ok {
		t.Fatalf("Put over an expired record = %v, %v", ok, err)
	}
	if rec, _ := s.LookupIdempotency(ctx, "alice POST /calls", "k1", 5000); rec == nil || rec.Fingerprint != "fp3" {
		t.Fatalf("after replacing: %+v", rec)
	}
	// An empty body is stored as empty, not lost.
	if ok, err := s.PutIdempotency(ctx, calls.IdempotencyRecord{Scope: "sc", Key: "empty", Fingerprint: "fp",
		Response: calls.StoredResponse{Status: 204}, CreatedAt: 1000, ExpiresAt: 2000}); err != nil || !ok {
		t.Fatalf("Put without a body = %v, %v", ok, err)
	}
	if rec, err := s.LookupIdempotency(ctx, "sc", "empty", 1000); err != nil || rec == nil || rec.Response.Status != 204 || len(rec.Response.Body) != 0 {
		t.Fatalf("record without a body = %+v, %v", rec, err)
	}
}

func testPruneIdempotency(t *testing.T, s db.Store) {
	ctx := context.Background()
	for i, exp := range []int64{100, 200, 300} {
		if _, err := s.PutIdempotency(ctx, record("sc", string(rune('a'+i)), "fp", 200, "{}", 0, exp)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneIdempotency(ctx, 200)
	if err != nil || n != 2 {
		t.Fatalf("PruneIdempotency = %d, %v; want 2", n, err)
	}
	if rec, _ := s.LookupIdempotency(ctx, "sc", "c", 200); rec == nil {
		t.Fatal("the live record was pruned")
	}
	if n, err := s.PruneIdempotency(ctx, 200); err != nil || n != 0 {
		t.Fatalf("pruning again = %d, %v; want 0", n, err)
	}
	if n, err := s.PruneIdempotency(ctx, 300); err != nil || n != 1 {
		t.Fatalf("pruning the last = %d, %v; want 1", n, err)
	}
}

// The pruner is a background part: it prunes at once, then every Every,
// and returns nil once its context ends.
func testIdempotencyPrunerRun(t *testing.T, s db.Store) {
	for key, exp := range map[string]int64{"old": 100, "live": 5000} {
		if _, err := s.PutIdempotency(context.Background(), record("sc", key, "fp", 200, "{}", 0, exp)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	rounds := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- (&db.Pruner{What: "idempotency keys", Prune: s.PruneIdempotency, Every: time.Millisecond, Now: func() time.Time {
			select {
			case rounds <- struct{}{}:
			default: // the test has seen enough rounds
			}
			return time.UnixMilli(1000)
		}}).Run(ctx)
	}()
	for range 2 { // a second round begins only once the first has pruned
		select {
		case <-rounds:
		case <-time.After(5 * time.Second):
			t.Fatal("the pruner does not run its rounds")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel, want nil", err)
	}
	if n, err := s.PruneIdempotency(context.Background(), 1000); err != nil || n != 0 {
		t.Fatalf("%d records left to prune after the pruner's rounds (%v), want the expired one gone", n, err)
	}
	if rec, _ := s.LookupIdempotency(context.Background(), "sc", "live", 1000); rec == nil {
		t.Fatal("the pruner deleted a live record")
	}
}

// keyed returns a context asking the next use-case to record its answer
// under key; encode defaults to JSON with status 201.
func keyed(key, fp string, encode func(any) (calls.StoredResponse, error)) (context.Context, *calls.Idempotency) {
	if encode == nil {
		encode = func(v any) (calls.StoredResponse, error) {
			b, err := json.Marshal(v)
			return calls.StoredResponse{Status: 201, ContentType: "application/json", Body: b}, err
		}
	}
	i := &calls.Idempotency{Scope: "alice POST /calls", Key: key, Fingerprint: fp, Now: 1000, ExpiresAt: 1000 + 86_400_000, Encode: encode}
	return calls.WithIdempotency(context.Background(), i), i
}

// A change and its Idempotency-Key record commit in one transaction: a
// failure after the change was saved but before the record was (here the
// encoder failing or panicking inside the write, as a crash at that instant
// would) leaves neither, and a success leaves both. Issue 9, defect 2: the
// old Reserve / act / Complete in three transactions left a call without a
// finished record, which a retry then created a second time.
func testIdempotentChangeCommitsWithItsRecord(t *testing.T, s db.Store) {
	svc := calls.NewService(calls.Options{Store: s})
	alice := calls.Actor{UserID: "alice"}
	in := calls.InviteInput{Invitees: []string{"bob"}}
	boom := errors.New("crash between the change and its record")
	// What is stored, through the ports: alice's calls, the key's record,
	// and the events of both users.
	stored := func() (callCount int, keyed bool, eventCount int) {
		list, err := s.ListCalls(context.Background(), "alice", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.LookupIdempotency(context.Background(), "alice POST /calls", "k", 1000)
		if err != nil {
			t.Fatal(err)
		}
		return len(list), rec != nil, len(events(t, s, "alice")) + len(events(t, s, "bob"))
	}

	ctx, _ := keyed("k", "fp", func(any) (calls.StoredResponse, error) { return calls.StoredResponse{}, boom })
	if _, err := svc.Invite(ctx, alice, in); !errors.Is(err, boom) {
		t.Fatalf("Invite with a failing record = %v, want %v", err, boom)
	}
	ctx, _ = keyed("k", "fp", func(any) (calls.StoredResponse, error) { panic(boom) })
	var pe *db.PanicError
	if _, err := svc.Invite(ctx, alice, in); !errors.As(err, &pe) {
		t.Fatalf("Invite with a panicking record = %v, want a *db.PanicError", err)
	}
	if n, k, e := stored(); n != 0 || k || e != 0 {
		t.Fatalf("after failed records: %d calls, key recorded %v, %d events; want none", n, k, e)
	}

	ctx, first := keyed("k", "fp", nil)
	res, err := svc.Invite(ctx, alice, in)
	if err != nil {
		t.Fatal(err)
	}
	resp, replayed, ok := first.Response()
	want, _ := json.Marshal(res)
	if !ok || replayed || resp.Status != 201 || string(resp.Body) != string(want) {
		t.Fatalf("first answer %+v replayed=%v ok=%v, want %s", resp, replayed, ok, want)
	}
	if n, k, _ := stored(); n != 1 || !k {
		t.Fatalf("after the first request: %d calls, key recorded %v; want 1 and true", n, k)
	}

	// The same key again, and from many at once: replayed, nothing applied.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			ctx, again := keyed("k", "fp", nil)
			res, err := svc.Invite(ctx, alice, in)
			resp, replayed, ok := again.Response()
			if err != nil || res != nil || !ok || !replayed || string(resp.Body) != string(want) {
				t.Errorf("retry: res=%v err=%v answer=%s replayed=%v ok=%v", res, err, resp.Body, replayed, ok)
			}
		})
	}
	wg.Wait()
	ctx, _ = keyed("k", "other", nil)
	if _, err := svc.Invite(ctx, alice, in); !errors.Is(err, calls.ErrIdempotencyMismatch) {
		t.Fatalf("another request under the key = %v, want ErrIdempotencyMismatch", err)
	}
	if n, _, _ := stored(); n != 1 {
		t.Fatalf("%d calls after the retries, want 1", n)
	}

	// The same holds for the actions on a call (mutate): the retried accept
	// is replayed, not refused as invalid_state, and writes no event.
	bob := calls.Actor{UserID: "bob"}
	accept := func() (*calls.ActionResult, *calls.Idempotency, error) {
		i := &calls.Idempotency{Scope: "bob POST /calls/{callID}/accept", Key: "a", Fingerprint: "fp",
			Now: 1000, ExpiresAt: 2000, Encode: first.Encode}
		res, err := svc.Accept(calls.WithIdempotency(context.Background(), i), bob, res.CallID, "")
		return res, i, err
	}
	if r, _, err := accept(); err != nil || r == nil {
		t.Fatalf("accept: %v, %v", r, err)
	}
	_, _, evs := stored()
	if _, i, err := accept(); err != nil {
		t.Fatalf("retried accept: %v", err)
	} else if _, replayed, _ := i.Response(); !replayed {
		t.Fatalf("retried accept: not replayed")
	}
	if _, _, after := stored(); after != evs {
		t.Fatalf("retried accept: events %d → %d", evs, after)
	}
}
