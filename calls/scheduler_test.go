package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"callsig/internal/wait"
)

// claimerOnly is a DeadlineClaimer that says nothing about batching.
type claimerOnly struct{}

func (claimerOnly) UpdateDue(context.Context, int64, int, func(Tx, []Deadline) error) (int, error) {
	return 0, nil
}

// batchingClaimer is a DeadlineClaimer with its own batching.
type batchingClaimer struct {
	claimerOnly
	parallel, batch int
	pipelined       bool
}

func (b batchingClaimer) DeadlineBatching() ClaimBatching {
	return ClaimBatching{Parallel: b.parallel, Batch: b.batch, Pipelined: b.pipelined}
}

// The scheduler splits due deadlines as the store asks (DeadlineBatcher),
// and as for PostgreSQL when the store does not say, or says nonsense.
func TestClaimBatching(t *testing.T) {
	for _, tc := range []struct {
		name string
		cl   DeadlineClaimer
		want ClaimBatching
	}{
		{"store says nothing", claimerOnly{}, ClaimBatching{Parallel: claimParallel, Batch: claimBatch}},
		{"store asks", batchingClaimer{parallel: 2, batch: 128}, ClaimBatching{Parallel: 2, Batch: 128}},
		{"store pipelines", batchingClaimer{parallel: 1, batch: 64, pipelined: true}, ClaimBatching{Parallel: 1, Batch: 64, Pipelined: true}},
		{"no workers", batchingClaimer{parallel: 0, batch: 128, pipelined: true}, ClaimBatching{Parallel: claimParallel, Batch: claimBatch}},
		{"empty batches", batchingClaimer{parallel: 2, batch: 0}, ClaimBatching{Parallel: claimParallel, Batch: claimBatch}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := claimBatching(tc.cl); got != tc.want {
				t.Errorf("claimBatching = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// setClock is a clock a test sets by hand; its timers are never used here.
type setClock struct{ ms atomic.Int64 }

func (c *setClock) Now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *setClock) AfterFunc(d time.Duration, f func()) Timer {
	panic("setClock: no timers")
}

// claimStore is a DeadlineClaimer over bare deadline times. A claim takes
// every pending deadline due at its now, except one held by another
// transaction (held counts the claims it is still held for); afterClaim
// runs after each claim.
type claimStore struct {
	Store      // the rest of the port: never called by claimRound
	mu         sync.Mutex
	pending    []int64
	held       map[int64]int
	afterClaim func()
}

func (s *claimStore) DeadlineBatching() ClaimBatching { return ClaimBatching{Parallel: 1, Batch: 64} }

func (s *claimStore) UpdateDue(_ context.Context, now int64, limit int, _ func(Tx, []Deadline) error) (int, error) {
	s.mu.Lock()
	claimed, keep := 0, s.pending[:0]
	for _, at := range s.pending {
		switch {
		case at <= now && s.held[at] > 0:
			s.held[at]--
		case at <= now && claimed < limit:
			claimed++
			continue
		}
		keep = append(keep, at)
	}
	s.pending = keep
	after := s.afterClaim
	s.afterClaim = nil
	s.mu.Unlock()
	if after != nil {
		after()
	}
	return claimed, nil
}

func (s *claimStore) NextDeadline(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := int64(0)
	for _, at := range s.pending {
		if next == 0 || at < next {
			next = at
		}
	}
	return next, nil
}

// A round waits for a due deadline only when another transaction holds it.
// One that fell due while the round's claims ran is claimed again at once:
// a wait for it would make a steady stream of deadlines claimBackoff late
// (on one node, where nobody else ever holds one, the round never waits).
func TestClaimRoundWaitsOnlyForHeldDeadlines(t *testing.T) {
	const t0 = int64(1_000_000)
	for _, tc := range []struct {
		name     string
		pending  []int64
		held     map[int64]int
		advance  int64 // the clock moves this far during the first claim
		backoffs int64
	}{
		{name: "falls due during the claim", pending: []int64{t0 + 5}, advance: 10, backoffs: 0},
		{name: "held by another transaction", pending: []int64{t0 - 1}, held: map[int64]int{t0 - 1: 1}, backoffs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &setClock{}
			clock.ms.Store(t0)
			st := &claimStore{pending: tc.pending, held: tc.held}
			st.afterClaim = func() { clock.ms.Add(tc.advance) }
			s := NewService(Options{Store: st, Clock: clock})
			next, err := s.sched.claimRound(context.Background(), st)
			if err != nil || next != 0 {
				t.Fatalf("claimRound = %d, %v; want 0 (nothing left), nil", next, err)
			}
			if len(st.pending) != 0 {
				t.Fatalf("left unfired: %v", st.pending)
			}
			if got := s.sched.backoffs.Load(); got != tc.backoffs {
				t.Fatalf("waited %d times for held deadlines, want %d", got, tc.backoffs)
			}
		})
	}
}

// armStore fails the startup arming transactions with errs, in turn, then
// commits them (with nothing to arm); it has no deadlines.
type armStore struct {
	Store
	mu      sync.Mutex
	errs    []error
	updates int
}

func (s *armStore) Update(context.Context, func(Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates++
	if len(s.errs) == 0 {
		return nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return err
}

func (s *armStore) DueDeadlines(context.Context, int64, int) ([]Deadline, error) { return nil, nil }
func (s *armStore) NextDeadline(context.Context) (int64, error)                  { return 0, nil }

func (s *armStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updates
}

// The startup arming waits out a store that cannot serve now (Run goes on,
// and arms once it can) but stops the server over any other failure.
func TestRunRetriesArmingOnlyWhileTheStoreIsUnavailable(t *testing.T) {
	t.Run("unavailable, then back", func(t *testing.T) {
		st := &armStore{errs: []error{fmt.Errorf("db: begin: %w", ErrUnavailable)}}
		s := NewService(Options{Store: st})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		wait.For(t, 10*time.Second, "the arming tried again", func() bool { return st.count() >= 2 })
		select {
		case err := <-done:
			t.Fatalf("Run returned %v while the store was only unavailable", err)
		default:
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v after its context ended, want nil", err)
		}
	})
	t.Run("broken", func(t *testing.T) {
		broken := errors.New("no such column: caller_offline_at")
		st := &armStore{errs: []error{broken}}
		err := NewService(Options{Store: st}).Run(context.Background())
		if !errors.Is(err, broken) {
			t.Fatalf("Run = %v, want the store's failure", err)
		}
		if n := st.count(); n != 1 {
			t.Fatalf("%d arming attempts, want 1", n)
		}
	})
}

// rerunClaimer runs its UpdateDue transaction twice, as a store retrying a
// conflict or replaying a group commit does: the first run is given one
// due invitation and does not commit; in the second it is no longer due.
type rerunClaimer struct {
	Store // the rest of the port: never called by expireClaimed
	call  *Call
}

func (s *rerunClaimer) UpdateDue(_ context.Context, _ int64, _ int, fn func(Tx, []Deadline) error) (int, error) {
	due := []Deadline{{CallID: s.call.ID, UserID: "bob", Kind: DeadlineTimeout, At: 1}}
	if err := fn(oneCallTx{call: s.call}, due); err != nil {
		return 0, err
	}
	return 0, fn(oneCallTx{call: s.call}, nil)
}

// oneCallTx holds one call and takes saves without keeping them.
type oneCallTx struct {
	Tx
	call *Call
}

func (t oneCallTx) Call(context.Context, string) (*Call, error) { return t.call.Clone(), nil }
func (t oneCallTx) Save(context.Context, *Change) error         { return nil }

// eventCounter is a Notifier counting the events it is told committed.
type eventCounter struct{ n atomic.Int64 }

func (c *eventCounter) Committed(evs []Event, _ int) { c.n.Add(int64(len(evs))) }

// What a run of the claim built and did not commit is not published: the
// last run, given nothing, drops it (DeadlineClaimer).
func TestExpireClaimedPublishesOnlyTheLastRun(t *testing.T) {
	clock := &setClock{}
	clock.ms.Store(100_000)
	call := &Call{ID: "c1", Caller: "alice", Mode: ModeGeneral, State: CallStarted, Timeout: 30, CreateTime: 1,
		Users: []*CallUser{{UserID: "alice", State: StateInviting}, {UserID: "bob", State: StateInviting, Inviter: "alice", TimeoutAt: 1}}}
	st := &rerunClaimer{call: call}
	events := &eventCounter{}
	s := NewService(Options{Store: st, Clock: clock, Notifier: events})
	if ch := Expire(call.Clone(), Deadline{CallID: "c1", UserID: "bob", Kind: DeadlineTimeout, At: 1}, 100_000); ch == nil || len(ch.Events) == 0 {
		t.Fatal("the fixture's deadline fires nothing: the test would prove nothing")
	}
	if _, err := s.expireClaimed(context.Background(), st, 64, nil); err != nil {
		t.Fatal(err)
	}
	if n := events.n.Load(); n != 0 {
		t.Fatalf("%d events published from a run that did not commit", n)
	}
}

// armTx serves a batch of tracked calls to the start-up arming and keeps
// what it saves.
type armTx struct {
	Tx
	calls []*Call
	saved []string
}

func (t *armTx) TrackedCallerOfflineCalls(context.Context, int64, int) ([]*Call, error) {
	return t.calls, nil
}

func (t *armTx) Save(_ context.Context, ch *Change) error {
	t.saved = append(t.saved, ch.Call.ID)
	return nil
}

type armBatchStore struct {
	Store
	tx *armTx
}

func (s armBatchStore) Update(_ context.Context, fn func(Tx) error) error { return fn(s.tx) }

// countedPresence is a CheckedPresence with a set of users online that
// counts its lookups per user.
type countedPresence struct {
	online  map[string]bool
	lookups map[string]int
}

func (p *countedPresence) Online(u string) bool { return p.online[u] }
func (p *countedPresence) CheckOnline(_ context.Context, u string) (bool, error) {
	p.lookups[u]++
	return p.online[u], nil
}

// The start-up arming looks each caller up once a batch, however many of
// its calls the batch holds: in a cluster a lookup is a query, made while
// the batch holds the calls locked. The calls of offline callers are
// armed, those of online ones left alone.
func TestArmingLooksEachCallerUpOnceABatch(t *testing.T) {
	tracked := func(id, caller string, seq int64) *Call {
		c := tableCall(ModeGeneral, StateInviting)
		c.ID, c.Caller, c.Seq, c.CallerTracked = id, caller, seq, true
		c.Users[0].UserID, c.Users[0].Inviter = caller, caller
		c.Users[1].Inviter = caller
		return c
	}
	tx := &armTx{calls: []*Call{tracked("a1", "alice", 1), tracked("c1", "carol", 2), tracked("a2", "alice", 3), tracked("a3", "alice", 4)}}
	p := &countedPresence{online: map[string]bool{"carol": true}, lookups: map[string]int{}}
	s := NewService(Options{Store: armBatchStore{tx: tx}, Presence: p})
	n, last, err := s.armCallersBatch(context.Background(), 0)
	if err != nil || n != 4 || last != 4 {
		t.Fatalf("armCallersBatch = %d, %d, %v; want 4 calls up to seq 4", n, last, err)
	}
	if p.lookups["alice"] != 1 || p.lookups["carol"] != 1 {
		t.Errorf("lookups %v, want one per caller", p.lookups)
	}
	if want := []string{"a1", "a2", "a3"}; !slices.Equal(tx.saved, want) {
		t.Errorf("armed %v, want the offline caller's calls %v", tx.saved, want)
	}
}

// callsClaimer hands out its deadlines once, over calls it keeps, and
// keeps what the claim saved.
type callsClaimer struct {
	Store // the rest of the port: never called by expireClaimed
	calls map[string]*Call
	due   []Deadline
	saved map[string]*Call
}

func (s *callsClaimer) UpdateDue(_ context.Context, _ int64, _ int, fn func(Tx, []Deadline) error) (int, error) {
	return len(s.due), fn(callsTx{s: s}, s.due)
}

type callsTx struct {
	Tx
	s *callsClaimer
}

func (t callsTx) Call(_ context.Context, id string) (*Call, error) { return t.s.calls[id].Clone(), nil }
func (t callsTx) Save(_ context.Context, ch *Change) error {
	t.s.saved[ch.Call.ID] = ch.Call
	return nil
}

// failingPresence is a CheckedPresence that cannot tell, counting how
// often it was asked.
type failingPresence struct{ asked int }

func (p *failingPresence) Online(string) bool { return false }
func (p *failingPresence) CheckOnline(context.Context, string) (bool, error) {
	p.asked++
	return false, errors.New("presence table out of reach")
}

// A claim of caller-offline deadlines asks presence whether each caller
// is back (see Service.expire) while it holds the calls' rows; once
// presence cannot tell, it asks no more in that claim, each question
// waiting out presence's own bound, and ends the graces as armed.
func TestClaimStopsAskingPresenceItCannotReach(t *testing.T) {
	clock := &setClock{}
	clock.ms.Store(100_000)
	st := &callsClaimer{calls: map[string]*Call{}, saved: map[string]*Call{}}
	for _, caller := range []string{"alice", "bob", "carol"} {
		c := tableCall(ModeGeneral, StateInviting)
		c.ID, c.Caller, c.CallerTracked, c.CallerOfflineAt = caller+"-call", caller, true, 50_000
		c.Users[0].UserID, c.Users[0].Inviter = caller, caller
		for _, u := range c.Users[1:] {
			u.Inviter = caller
		}
		st.calls[c.ID] = c
		st.due = append(st.due, Deadline{CallID: c.ID, Kind: DeadlineCallerOffline, At: 50_000})
	}
	p := &failingPresence{}
	s := NewService(Options{Store: st, Clock: clock, Presence: p, Config: Config{HeartbeatTimeout: 30 * time.Second}})
	if _, err := s.expireClaimed(context.Background(), st, 64, nil); err != nil {
		t.Fatal(err)
	}
	if p.asked != 1 {
		t.Errorf("presence asked %d times in one claim, want once", p.asked)
	}
	for id := range st.calls {
		if c := st.saved[id]; c == nil || c.State != CallEnded || c.EndReason != EndCallerOffline {
			t.Errorf("%s: %+v, want ended by callerOffline", id, c)
		}
	}
}

// pipeClaimer hands out claims of deadlines whose calls are gone (fn fires
// nothing and returns at once), and holds each claim's answer until the
// test releases it, as SQLite's syncer holds one until its fsync.
type pipeClaimer struct {
	Store    // the rest of the port: never called by claimPipelined
	mu       sync.Mutex
	left     int                // deadlines still due
	started  int                // UpdateDue calls so far
	inFlight int                // UpdateDue calls not answered
	most     int                // the most inFlight has been
	gates    map[int]chan error // claim number (from 1) -> its answer
	// before fails a claim (by number) before its fn runs, as a store
	// that cannot begin; broken has a claim's fn read its calls with
	// brokenTx, so that fn fails, and so does firing them one by one
	// (Update).
	before map[int]error
	broken map[int]bool
}

// Update runs fn with brokenTx: the one-by-one firing of a claim that
// failed (expireEach) fails too.
func (s *pipeClaimer) Update(_ context.Context, fn func(Tx) error) error { return fn(brokenTx{}) }

func (s *pipeClaimer) gate(i int) chan error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gates[i] == nil {
		s.gates[i] = make(chan error)
	}
	return s.gates[i]
}

func (s *pipeClaimer) counts() (started, inFlight, most int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started, s.inFlight, s.most
}

func (s *pipeClaimer) UpdateDue(_ context.Context, _ int64, limit int, fn func(Tx, []Deadline) error) (int, error) {
	s.mu.Lock()
	s.started++
	i := s.started
	s.inFlight++
	s.most = max(s.most, s.inFlight)
	n := min(limit, s.left)
	s.left -= n
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	if err := s.before[i]; err != nil {
		return 0, err
	}
	due := make([]Deadline, n)
	for k := range due {
		due[k] = Deadline{CallID: fmt.Sprintf("gone-%d-%d", i, k), UserID: "bob", Kind: DeadlineTimeout, At: 1}
	}
	var tx Tx = goneTx{}
	if s.broken[i] {
		tx = brokenTx{}
	}
	if err := fn(tx, due); err != nil {
		return 0, err
	}
	if err := <-s.gate(i); err != nil {
		return 0, err
	}
	return n, nil
}

// goneTx finds no call.
type goneTx struct{ Tx }

func (goneTx) Call(context.Context, string) (*Call, error) { return nil, ErrCallNotFound }

// brokenTx cannot read a call.
type brokenTx struct{ Tx }

var errBrokenRow = errors.New("a broken row")

func (brokenTx) Call(context.Context, string) (*Call, error) { return nil, errBrokenRow }

// A pipelined claimer queues its next claim once the last one's fn has
// run, and no sooner than the claim before that is answered: never more
// than two in flight, the next one started exactly when the oldest is
// answered. A claim that fails ends the pipeline with its error once the
// claims in flight are answered. (synctest: Wait returns once every
// goroutine of the test is blocked, so each count is exact.)
func TestClaimPipelineKeepsTwoInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const batch = 64
		st := &pipeClaimer{left: 3 * batch, gates: map[int]chan error{}}
		s := NewService(Options{Store: st, Clock: &setClock{}})
		errc := make(chan error, 1)
		go func() { errc <- s.sched.claimPipelined(context.Background(), st, batch) }()
		synctest.Wait()
		if started, inFlight, _ := st.counts(); started != 2 || inFlight != 2 {
			t.Fatalf("before any answer: %d claims started, %d in flight; want 2 and 2", started, inFlight)
		}
		// Claims 3 and 4 (the last one given nothing) start as 1 and 2 are
		// answered, one each.
		for i := 1; i <= 2; i++ {
			st.gate(i) <- nil
			synctest.Wait()
			if started, inFlight, _ := st.counts(); started != i+2 || inFlight != 2 {
				t.Fatalf("claim %d answered: %d claims started, %d in flight; want %d and 2", i, started, inFlight, i+2)
			}
		}
		st.gate(3) <- nil
		st.gate(4) <- nil
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if started, inFlight, most := st.counts(); started != 4 || inFlight != 0 || most != 2 {
			t.Errorf("at the end: %d claims started, %d in flight, at most %d; want 4, 0, 2", started, inFlight, most)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		st := &pipeClaimer{left: 10 * 64, gates: map[int]chan error{}}
		s := NewService(Options{Store: st, Clock: &setClock{}})
		errc := make(chan error, 1)
		go func() { errc <- s.sched.claimPipelined(context.Background(), st, 64) }()
		synctest.Wait()
		down := fmt.Errorf("commit: %w", ErrUnavailable)
		st.gate(1) <- down // the oldest claim fails
		synctest.Wait()
		// Claim 2 was queued before the failure was known, and one more
		// may be; nothing after the failure is seen.
		started, _, _ := st.counts()
		for i := 2; i <= started; i++ {
			st.gate(i) <- nil
		}
		if err := <-errc; !errors.Is(err, ErrUnavailable) {
			t.Fatalf("claimPipelined after a failed claim = %v, want its error", err)
		}
		if started, _, most := st.counts(); started > 3 || most > 2 {
			t.Errorf("after a failed claim: %d claims started, at most %d in flight; want ≤ 3 and ≤ 2", started, most)
		}
	})
}

// A pipeline of claims ends, with no claim left in flight and none
// started after: when a claim fails before its fn runs (the store cannot
// begin), with that error; when a claim's fn fails and so does firing its
// deadlines one by one, with that error, once the claim before it is
// answered; when its context is cancelled, with the claims in flight
// answered and no error. (synctest, as above.)
func TestClaimPipelineEnds(t *testing.T) {
	down := fmt.Errorf("begin: %w", ErrUnavailable)
	for _, tc := range []struct {
		name        string
		before      map[int]error
		broken      map[int]bool
		cancel      bool // once two claims are in flight
		started     int  // claims started in all
		wantErr     error
		answerFirst bool // claim 1 is held until the pipeline has seen the failure
	}{
		{name: "store down before the first claim's fn", before: map[int]error{1: down}, started: 1, wantErr: ErrUnavailable},
		{name: "store down before the second claim's fn", before: map[int]error{2: down}, started: 2, wantErr: ErrUnavailable, answerFirst: true},
		{name: "the first claim's fn fails", broken: map[int]bool{1: true}, started: 1, wantErr: errBrokenRow},
		{name: "the second claim's fn fails", broken: map[int]bool{2: true}, started: 2, wantErr: errBrokenRow, answerFirst: true},
		{name: "cancelled", cancel: true, started: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &pipeClaimer{left: 10 * 64, gates: map[int]chan error{}, before: tc.before, broken: tc.broken}
				s := NewService(Options{Store: st, Clock: &setClock{}, Logger: slog.New(slog.DiscardHandler)})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				errc := make(chan error, 1)
				go func() { errc <- s.sched.claimPipelined(ctx, st, 64) }()
				synctest.Wait()
				if tc.cancel {
					cancel()
				}
				if tc.answerFirst || tc.cancel {
					select {
					case err := <-errc:
						t.Fatalf("claimPipelined returned (%v) with claim 1 in flight", err)
					default:
					}
					st.gate(1) <- nil
				}
				if tc.cancel {
					synctest.Wait()
					st.gate(2) <- nil
				}
				err := <-errc
				if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Fatalf("claimPipelined = %v, want %v", err, tc.wantErr)
				}
				if started, inFlight, _ := st.counts(); started != tc.started || inFlight != 0 {
					t.Errorf("%d claims started, %d in flight at the end; want %d and 0", started, inFlight, tc.started)
				}
			})
		})
	}
}

// steppedClock is the system clock (synctest's, in a bubble) with its
// wall time stepped by offset, as NTP or a VM resumed steps it; its timers
// count elapsed time, as Go's do on the monotonic clock.
type steppedClock struct{ offset atomic.Int64 }

func (c *steppedClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *steppedClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

func (s *claimStore) add(at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, at)
}

func (s *claimStore) has(at int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.pending, at)
}

// The wall clock steps forward while the scheduler waits for a distant
// deadline. Its timer counts elapsed time, so that wait still ends where
// it would have; a deadline set after the step fires when the stepped
// clock reaches it, not when that old wait ends (an invitation made with
// a 30 s timeout rang for ten minutes).
func TestSchedulerFollowsTheClockSteppingForward(t *testing.T) {
	for _, tc := range []struct {
		name    string
		step    time.Duration
		timeout time.Duration // of the deadline set after the step
	}{
		{"past the armed deadline", 10*time.Minute + time.Second, 30 * time.Second},
		// Later than the armed deadline by the stepped clock, earlier
		// than the end of the timer's wait.
		{"short of the armed deadline", 5 * time.Minute, 7 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock := &steppedClock{}
				st := &claimStore{pending: []int64{clock.Now().Add(10 * time.Minute).UnixMilli()}}
				s := NewService(Options{Store: st, Clock: clock})
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { defer close(done); s.sched.run(ctx) }()
				synctest.Wait() // the first round is over, its timer set

				clock.offset.Add(int64(tc.step))
				near := clock.Now().Add(tc.timeout).UnixMilli()
				st.add(near)
				s.sched.Arm(near)
				time.Sleep(tc.timeout + time.Millisecond)
				synctest.Wait()
				if st.has(near) {
					t.Errorf("a deadline %v after the step had not fired %v after it", tc.timeout, tc.timeout)
				}
				cancel()
				<-done
			})
		})
	}
}
