package storetest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// claimer returns s as a calls.DeadlineClaimer: every backend fires due
// deadlines in batches, so one without it fails the contract.
func claimer(t *testing.T, s db.Store) calls.DeadlineClaimer {
	t.Helper()
	cl, ok := s.(calls.DeadlineClaimer)
	if !ok {
		t.Fatalf("%T is not a calls.DeadlineClaimer", s)
	}
	return cl
}

// saveDue writes n started calls prefix-000… from their own caller to their
// own invitee, created at 1,000, each invitation timing out at 31,000.
func saveDue(t *testing.T, s db.Store, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	err := s.Update(ctx, func(tx calls.Tx) error {
		for i := range n {
			ch := NewCall(fmt.Sprintf("%s%03d", prefix, i), fmt.Sprintf("%s-caller%d", prefix, i), 1_000,
				fmt.Sprintf("%s-callee%d", prefix, i))
			if err := tx.Save(ctx, ch); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// UpdateDue hands fn due deadlines, in At order and at most limit, with a
// working calls.Tx; what fn saves commits, and a deadline fired is not
// handed out again. (Which due deadlines a limit keeps may differ: SQLite
// takes the earliest, PostgreSQL fills the batch kind by kind.)
func testUpdateDueHandsDueDeadlines(t *testing.T, s db.Store) {
	ctx := context.Background()
	cl := claimer(t, s)
	saveDeadlinesOfEveryKind(t, s)
	want := []calls.Deadline{
		{CallID: "b", Kind: calls.DeadlineCallerOffline, At: 100},
		{CallID: "a", UserID: "carol", Kind: calls.DeadlineNotReceived, At: 200},
		{CallID: "a", UserID: "bob", Kind: calls.DeadlineTimeout, At: 300},
		{CallID: "c", UserID: "gina", Kind: calls.DeadlineNotReceived, At: 400},
	}
	given := func(now int64, limit int, fire bool) ([]calls.Deadline, int) {
		t.Helper()
		var got []calls.Deadline
		n, err := cl.UpdateDue(ctx, now, limit, func(tx calls.Tx, due []calls.Deadline) error {
			got = append(got[:0], due...) // fn may run more than once
			if !fire {
				return nil
			}
			for _, d := range due {
				c, err := tx.Call(ctx, d.CallID)
				if err != nil {
					return err
				}
				if ch := calls.Expire(c, d, now); ch != nil {
					if err := tx.Save(ctx, ch); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateDue(%d, %d): %v", now, limit, err)
		}
		if n != len(got) {
			t.Errorf("UpdateDue(%d, %d) = %d, but fn was given %d", now, limit, n, len(got))
		}
		return got, n
	}

	if got, _ := given(500, 10, false); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("UpdateDue(500, 10) gave\n %v\nwant\n %v", got, want)
	}
	if got, n := given(99, 10, false); len(got) != 0 || n != 0 {
		t.Errorf("UpdateDue(99) gave %d: %v, want none", n, got)
	}
	// With nothing due fn still runs, given nothing: it drops what an
	// earlier run of the transaction built (calls.DeadlineClaimer).
	ran := false
	if _, err := cl.UpdateDue(ctx, 99, 10, func(_ calls.Tx, due []calls.Deadline) error {
		ran = len(due) == 0
		return nil
	}); err != nil || !ran {
		t.Errorf("UpdateDue(99) with nothing due: fn given nothing %t, err %v; want true, nil", ran, err)
	}
	// Fire them in two batches of at most 2: each is handed out once.
	first, _ := given(500, 2, true)
	rest, _ := given(500, 10, true)
	all := append(slices.Clone(first), rest...)
	inOrder := func(ds []calls.Deadline) bool {
		return slices.IsSortedFunc(ds, func(x, y calls.Deadline) int { return cmp.Compare(x.At, y.At) })
	}
	slices.SortFunc(all, func(x, y calls.Deadline) int { return cmp.Compare(x.At, y.At) })
	if len(first) != 2 || !inOrder(first) || !inOrder(rest) || fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("UpdateDue(500, 2) gave %v, then UpdateDue(500, 10) %v; want 2 then the other 2 of %v, each in At order",
			first, rest, want)
	}
	if got, n := given(500, 10, true); n != 0 {
		t.Errorf("UpdateDue after firing all gave %d: %v, want none", n, got)
	}
	if next, err := s.NextDeadline(ctx); err != nil || next != 900 {
		t.Errorf("NextDeadline = %d (%v), want 900 (gina's timeout)", next, err)
	}
	// What fn saved committed: b ended (its caller went offline), bob
	// timed out, carol and gina not received.
	if b, err := s.Call(ctx, "b"); err != nil || b.State != calls.CallEnded || b.EndReason != calls.EndCallerOffline {
		t.Errorf("b after its caller-offline deadline: %+v (%v), want ended by callerOffline", b, err)
	}
	if a, err := s.Call(ctx, "a"); err != nil || a.User("bob").State != calls.StateTimeout ||
		a.User("carol").State != calls.StateNotYetReceived {
		t.Errorf("a after its deadlines: %+v (%v), want bob timeout, carol notYetReceived", a, err)
	}
	if c, err := s.Call(ctx, "c"); err != nil || c.User("gina").State != calls.StateNotYetReceived {
		t.Errorf("c after gina's not-received deadline: %+v (%v), want gina notYetReceived", c, err)
	}
}

// fn's error rolls back what it saved and is UpdateDue's error: the
// deadlines stay due.
func testUpdateDueRollsBackOnError(t *testing.T, s db.Store) {
	ctx := context.Background()
	cl := claimer(t, s)
	saveDue(t, s, "r", 3)
	boom := errors.New("boom")
	n, err := cl.UpdateDue(ctx, 40_000, 10, func(tx calls.Tx, due []calls.Deadline) error {
		for _, d := range due {
			c, err := tx.Call(ctx, d.CallID)
			if err != nil {
				return err
			}
			if err := tx.Save(ctx, calls.Expire(c, d, 40_000)); err != nil {
				return err
			}
		}
		return boom
	})
	if !errors.Is(err, boom) || n != 0 {
		t.Fatalf("UpdateDue = %d, %v; want 0, boom", n, err)
	}
	due, err := s.DueDeadlines(ctx, 40_000, 10)
	if err != nil || len(due) != 3 {
		t.Fatalf("DueDeadlines after a failed UpdateDue = %v (%v), want the 3 still due", due, err)
	}
	if c, err := s.Call(ctx, "r000"); err != nil || c.State != calls.CallStarted || c.User("r-callee0").State != calls.StateInviting {
		t.Errorf("r000 after a failed UpdateDue: %+v (%v), want unchanged", c, err)
	}
	if evs := events(t, s, "r-callee0"); len(evs) != 1 {
		t.Errorf("r-callee0 has %d events, want only the invitation", len(evs))
	}
}

// Concurrent UpdateDues (the scheduler's workers, or nodes) hand out each
// due deadline exactly once, and so fire it once: SQLite reads the due
// deadlines inside its one writer's transaction, PostgreSQL reads again
// the deadlines of the calls it locked (see stillDue there).
func testUpdateDueFiresEachDeadlineOnce(t *testing.T, s db.Store) {
	ctx := context.Background()
	cl := claimer(t, s)
	const n, workers = 200, 4
	saveDue(t, s, "o", n)
	var (
		mu    sync.Mutex
		fired = map[string]int{}
		// handed counts the deadlines given to fn in transactions that
		// committed.
		handed = map[string]int{}
		wg     sync.WaitGroup
		errs   = make(chan error, workers)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var ids, given []string
				got, err := cl.UpdateDue(ctx, 40_000, 7, func(tx calls.Tx, due []calls.Deadline) error {
					ids, given = ids[:0], given[:0] // fn may run more than once
					for _, d := range due {
						given = append(given, d.CallID)
						c, err := tx.Call(ctx, d.CallID)
						if err != nil {
							return err
						}
						if ch := calls.Expire(c, d, 40_000); ch != nil {
							if err := tx.Save(ctx, ch); err != nil {
								return err
							}
							if slices.ContainsFunc(ch.Events, func(e calls.Event) bool { return e.Type == calls.EventTimeout }) {
								ids = append(ids, d.CallID)
							}
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
				if got == 0 {
					return
				}
				mu.Lock()
				for _, id := range ids {
					fired[id]++
				}
				for _, id := range given {
					handed[id]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range n {
		if id := fmt.Sprintf("o%03d", i); fired[id] != 1 || handed[id] != 1 {
			t.Errorf("%s handed out %d times and fired %d times, want once each", id, handed[id], fired[id])
		}
		var timeouts int
		for _, e := range events(t, s, fmt.Sprintf("o-callee%d", i)) {
			if e.Type == calls.EventTimeout {
				timeouts++
			}
		}
		if timeouts != 1 {
			t.Errorf("o-callee%d has %d timeout events, want 1", i, timeouts)
		}
	}
	if next, err := s.NextDeadline(ctx); err != nil || next != 0 {
		t.Errorf("NextDeadline after all fired = %d (%v), want 0", next, err)
	}
}

// eventCounter is a calls.Notifier counting the committed events by type.
type eventCounter struct {
	mu sync.Mutex
	n  map[calls.EventType]int
}

func (c *eventCounter) Committed(evs []calls.Event, _ int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		c.n[e.Type]++
	}
}

func (c *eventCounter) count(typ calls.EventType) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[typ]
}

// runScheduler runs svc until the returned stop is called (or the test
// ends); stop waits for Run to return.
func runScheduler(t *testing.T, svc *calls.Service) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// The scheduler over the store fires every kind of deadline exactly once:
// more timeouts than one batch holds, a not-received check, and the
// caller-offline grace Run re-arms at start (a restart: no stream is open).
func testSchedulerFiresEachDeadlineOnce(t *testing.T, s db.Store) {
	ctx := context.Background()
	const n = 300
	saveDue(t, s, "t", n)
	nr := NewCall("nr", "nr-caller", 1_000, "nr-callee")
	nr.Call.Users[1].TimeoutAt = 91_000
	nr.Call.Users[1].NotReceivedAt = 6_000
	off := NewCall("off", "off-caller", 1_000, "off-callee")
	off.Call.Users[1].TimeoutAt = 91_000
	off.Call.CallerTracked = true
	for _, ch := range []*calls.Change{nr, off} {
		Save(t, s, ch)
	}
	clock := fakeclock.New(time.UnixMilli(1_000))
	counter := &eventCounter{n: map[calls.EventType]int{}}
	svc := calls.NewService(calls.Options{Store: s, Clock: clock, Notifier: counter,
		Config: calls.Config{HeartbeatTimeout: 30 * time.Second}})
	stop := runScheduler(t, svc)
	wait.For(t, 10*time.Second, "Run to re-arm the caller-offline grace", func() bool {
		c, err := s.Call(ctx, "off")
		return err == nil && c.CallerOfflineAt == 31_000
	})
	clock.Advance(40 * time.Second) // all due but the two invitations' 91 s timeouts
	wait.For(t, 30*time.Second, "every due deadline to fire", func() bool {
		next, err := s.NextDeadline(ctx)
		return err == nil && next == 91_000 && counter.count(calls.EventTimeout) >= n
	})
	stop() // every round has ended: anything fired twice is counted now

	if got := counter.count(calls.EventTimeout); got != n {
		t.Errorf("%d timeout events committed, want %d", got, n)
	}
	for i := range n {
		var timeouts int
		for _, e := range events(t, s, fmt.Sprintf("t-callee%d", i)) {
			if e.Type == calls.EventTimeout {
				timeouts++
			}
		}
		c, err := s.Call(ctx, fmt.Sprintf("t%03d", i))
		if timeouts != 1 || err != nil || c.State != calls.CallEnded {
			t.Fatalf("t%03d: %d timeout events, call %+v (%v); want one, ended", i, timeouts, c, err)
		}
	}
	if c, err := s.Call(ctx, "nr"); err != nil || c.User("nr-callee").State != calls.StateNotYetReceived {
		t.Errorf("nr: %+v (%v), want nr-callee notYetReceived", c, err)
	}
	if c, err := s.Call(ctx, "off"); err != nil || c.State != calls.CallEnded || c.EndReason != calls.EndCallerOffline {
		t.Errorf("off: %+v (%v), want ended by callerOffline", c, err)
	}
}

// changeDuringRound is a store that reports its first NextDeadline (the
// first round has read the next deadline), and whose first NextDeadline
// to find nothing pending runs during after its read: a change that
// commits while a round runs, after the round read the next deadline.
type changeDuringRound struct {
	db.Store
	calls.DeadlineClaimer
	during    func()
	read, ran chan struct{}
	readOnce  sync.Once
	ranOnce   sync.Once
}

func (s *changeDuringRound) NextDeadline(ctx context.Context) (int64, error) {
	next, err := s.Store.NextDeadline(ctx)
	s.readOnce.Do(func() { close(s.read) })
	if err == nil && next == 0 {
		s.ranOnce.Do(func() { s.during(); close(s.ran) })
	}
	return next, err
}

// A deadline created while a round runs fires, even when the round read
// the next deadline before it committed and found none: the scheduler
// sets its timer from what was armed during the round too.
func testSchedulerArmsDeadlineCreatedDuringRound(t *testing.T, s db.Store) {
	ctx := context.Background()
	saveDue(t, s, "first", 1) // due at 31,000
	clock := fakeclock.New(time.UnixMilli(1_000))
	store := &changeDuringRound{Store: s, DeadlineClaimer: claimer(t, s),
		read: make(chan struct{}), ran: make(chan struct{})}
	svc := calls.NewService(calls.Options{Store: store, Clock: clock})
	var late string
	store.during = func() {
		res, err := svc.Invite(ctx, calls.Actor{UserID: "late-caller"}, calls.InviteInput{Invitees: []string{"late-callee"}, Timeout: 30})
		if err != nil {
			t.Errorf("invite during a round: %v", err)
			return
		}
		late = res.CallID
	}
	runScheduler(t, svc)
	received := func(ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	// The first round arms the timer for 31,000 (or, when the clock has
	// passed it by then, for now).
	received(store.read, "the first round")
	clock.Advance(40 * time.Second) // "first" is due: a round fires it, then finds nothing pending
	received(store.ran, "a round to fire the first deadline")
	if late == "" {
		t.FailNow()
	}
	clock.Advance(40 * time.Second) // the late invitation's 30 s timeout is due
	wait.For(t, 10*time.Second, "the invitation created during a round to time out", func() bool {
		c, err := s.Call(ctx, late)
		return err == nil && c.User("late-callee").State == calls.StateTimeout
	})
}

// poisoned is a store on which saving one call always fails, inside
// claims (UpdateDue) and alone (Update) alike: a deadline that cannot be
// fired.
type poisoned struct {
	db.Store
	cl     calls.DeadlineClaimer
	callID string
}

func (s *poisoned) Update(ctx context.Context, fn func(calls.Tx) error) error {
	return s.Store.Update(ctx, func(tx calls.Tx) error { return fn(&poisonTx{Tx: tx, callID: s.callID}) })
}

func (s *poisoned) UpdateDue(ctx context.Context, now int64, limit int, fn func(calls.Tx, []calls.Deadline) error) (int, error) {
	return s.cl.UpdateDue(ctx, now, limit, func(tx calls.Tx, due []calls.Deadline) error {
		return fn(&poisonTx{Tx: tx, callID: s.callID}, due)
	})
}

type poisonTx struct {
	calls.Tx
	callID string
}

func (t *poisonTx) Save(ctx context.Context, ch *calls.Change) error {
	if ch.Call != nil && ch.Call.ID == t.callID {
		return errors.New("poisoned call")
	}
	return t.Tx.Save(ctx, ch)
}

// LockUsers passes the backend's user locks through (calls.UserLocker).
func (t *poisonTx) LockUsers(ctx context.Context, users []string) error {
	if l, ok := t.Tx.(calls.UserLocker); ok {
		return l.LockUsers(ctx, users)
	}
	return nil
}

// A deadline that cannot be fired does not hold back those claimed with
// it: the failed claim's deadlines are fired one by one.
func testSchedulerFiresPastAPoisonedDeadline(t *testing.T, s db.Store) {
	ctx := context.Background()
	const n = 20
	saveDue(t, s, "p", n) // p000…p019, due at 31,000
	clock := fakeclock.New(time.UnixMilli(1_000))
	counter := &eventCounter{n: map[calls.EventType]int{}}
	store := &poisoned{Store: s, cl: claimer(t, s), callID: "p003"}
	svc := calls.NewService(calls.Options{Store: store, Clock: clock, Notifier: counter})
	runScheduler(t, svc)
	clock.Advance(40 * time.Second)
	wait.For(t, 20*time.Second, "every deadline but the poisoned one to fire", func() bool {
		return counter.count(calls.EventTimeout) == n-1
	})
	if c, err := s.Call(ctx, "p003"); err != nil || c.State != calls.CallStarted {
		t.Errorf("the poisoned call: %+v (%v), want still started", c, err)
	}
}

// livePresence is a calls.Presence whose online set a test changes while
// the scheduler runs.
type livePresence struct {
	mu sync.Mutex
	on map[string]bool
}

func (p *livePresence) Online(u string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.on[u]
}

func (p *livePresence) set(u string, online bool) {
	p.mu.Lock()
	p.on[u] = online
	p.mu.Unlock()
}

// A caller-offline grace that ends while the caller has a stream again
// (its online report not made yet: the hub's workers busy, the store
// briefly out of reach for it) does not end the caller's calls: the
// grace is cleared, as the report would clear it. A caller still away
// loses its call as before. Both the scheduler's batched path and
// Service.Expire (its fallback, one deadline at a time) hold to it.
func testCallerBackBeforeItsReportKeepsItsCall(t *testing.T, s db.Store) {
	ctx := context.Background()
	for _, c := range []struct{ id, caller string }{{"gone", "alice"}, {"back", "bob"}} {
		ch := NewCall(c.id, c.caller, 1_000, c.caller+"-callee")
		ch.Call.Users[1].TimeoutAt = 91_000
		ch.Call.CallerTracked = true
		Save(t, s, ch)
	}
	clock := fakeclock.New(time.UnixMilli(1_000))
	presence := &livePresence{on: map[string]bool{}}
	svc := calls.NewService(calls.Options{Store: s, Clock: clock, Presence: presence,
		Config: calls.Config{HeartbeatTimeout: 30 * time.Second}})
	stop := runScheduler(t, svc)
	wait.For(t, 10*time.Second, "Run to arm both graces", func() bool {
		a, errA := s.Call(ctx, "gone")
		b, errB := s.Call(ctx, "back")
		return errA == nil && errB == nil && a.CallerOfflineAt == 31_000 && b.CallerOfflineAt == 31_000
	})
	presence.set("bob", true) // bob's stream opened; its report is not made
	clock.Advance(40 * time.Second)
	wait.For(t, 10*time.Second, "alice's call to end", func() bool {
		c, err := s.Call(ctx, "gone")
		return err == nil && c.State == calls.CallEnded
	})
	stop()
	if c, err := s.Call(ctx, "gone"); err != nil || c.EndReason != calls.EndCallerOffline {
		t.Errorf("gone: %+v (%v), want ended by callerOffline", c, err)
	}
	c, err := s.Call(ctx, "back")
	if err != nil || c.State != calls.CallStarted || c.CallerOfflineAt != 0 || c.User("bob-callee").State != calls.StateInviting {
		t.Fatalf("back: %+v (%v), want started, its grace cleared, bob-callee still inviting", c, err)
	}

	ch := NewCall("later", "bob", 41_000, "bob-callee2")
	ch.Call.Users[1].TimeoutAt = 131_000
	ch.Call.CallerTracked = true
	ch.Call.CallerOfflineAt = 41_000
	Save(t, s, ch)
	if err := svc.Expire(ctx, calls.Deadline{CallID: "later", Kind: calls.DeadlineCallerOffline, At: 41_000}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Call(ctx, "later"); err != nil || c.State != calls.CallStarted || c.CallerOfflineAt != 0 {
		t.Fatalf("later, fired by Service.Expire: %+v (%v), want started, its grace cleared", c, err)
	}
}

// A user whose not-received check and timeout fall due at the same instant
// (an invitation's timeout equal to CALLSIG_NOT_RECEIVED_AFTER, or both
// past due after downtime) is handed to the scheduler not-received first,
// as DueDeadlines orders them and as calls.DueDeadlines (the request-side
// settle) fires them: the invitee goes notYetReceived, then timeout.
func testUpdateDueTieOrderMatchesDueDeadlines(t *testing.T, s db.Store) {
	ctx := context.Background()
	cl := claimer(t, s)
	ch := NewCall("tie", "alice", 0, "bob")
	ch.Call.NotReceivedCheck = true
	ch.Call.Users[1].TimeoutAt = 300
	ch.Call.Users[1].NotReceivedAt = 300
	Save(t, s, ch)

	read, err := s.DueDeadlines(ctx, 500, 10)
	if err != nil {
		t.Fatal(err)
	}
	var given []calls.Deadline
	if _, err := cl.UpdateDue(ctx, 500, 10, func(_ calls.Tx, due []calls.Deadline) error {
		given = append(given[:0], due...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Call(ctx, "tie")
	if err != nil {
		t.Fatal(err)
	}
	pure := calls.DueDeadlines(c, 500)
	if fmt.Sprint(given) != fmt.Sprint(read) || fmt.Sprint(given) != fmt.Sprint(pure) {
		t.Errorf("UpdateDue handed\n %v\nDueDeadlines reads\n %v\ncalls.DueDeadlines fires\n %v", given, read, pure)
	}
}

// A claim bounded by its limit hands the first deadlines in DueDeadlines'
// order, whatever their kinds: not all the due timeouts before any
// not-received check, even an earlier one (a claim that read kind by kind,
// each up to what the kinds before it left, did).
func testUpdateDueLimitKeepsTheOrder(t *testing.T, s db.Store) {
	ctx := context.Background()
	cl := claimer(t, s)
	ch := NewCall("tie2", "alice", 0, "bob", "carol")
	ch.Call.NotReceivedCheck = true
	for _, u := range ch.Call.Users[1:] {
		u.NotReceivedAt = 200 // earlier than the timeout
		u.TimeoutAt = 300
	}
	Save(t, s, ch)
	read, err := s.DueDeadlines(ctx, 500, 2)
	if err != nil {
		t.Fatal(err)
	}
	var given []calls.Deadline
	if _, err := cl.UpdateDue(ctx, 500, 2, func(_ calls.Tx, due []calls.Deadline) error {
		given = append(given[:0], due...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(given) != fmt.Sprint(read) {
		t.Errorf("UpdateDue(limit 2) handed\n %v\nDueDeadlines(limit 2) reads\n %v", given, read)
	}
}
