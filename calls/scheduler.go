package calls

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Scheduler fires the durable deadlines (invitation timeouts, not-received
// checks, caller-offline grace). The deadlines live in the store; the
// scheduler keeps one timer on the earliest of them (or a minute away, at
// most: see maxTimerWait), so an idle server does no work, and a restart
// re-arms everything with one query.
type Scheduler struct {
	s    *Service
	wake chan struct{}

	mu    sync.Mutex
	next  int64 // when the armed timer fires (Unix ms), 0 when none
	timer Timer
	// inRound is set while a round runs, and armed is the earliest
	// deadline Arm was given meanwhile (0: none). The round may have read
	// NextDeadline before that deadline's change committed, and next is
	// stale until it ends, so the timer it sets must cover armed too.
	inRound bool
	armed   int64

	// backoffs counts the waits of claimRound for deadlines other
	// transactions hold (for tests: one node never waits).
	backoffs atomic.Int64
}

// How many due deadlines one round fetches and how many it expires at once;
// concurrent expiries let the store commit them in groups.
const (
	dueBatch       = 1000
	expireParallel = 64
	retryDelay     = time.Second
)

// maxTimerWait bounds the timer's wait: a timer counts elapsed time (Go's
// monotonic clock), the deadlines are wall-clock times, and after the wall
// clock stepped forward (NTP, a VM resumed) a timer set for a deadline ten
// minutes away would still wait ten minutes, past the deadlines set since
// that fall due earlier by the stepped clock. Reading the earliest
// deadline again every maxTimerWait bounds that to a minute.
const maxTimerWait = time.Minute

func newScheduler(s *Service) *Scheduler {
	return &Scheduler{s: s, wake: make(chan struct{}, 1)}
}

// Arm makes sure the scheduler wakes up by at. Cheap when a timer for an
// earlier deadline is already set, which is the common case, or when a
// round is running: the round's end sets the timer for at if it is the
// earliest.
func (sc *Scheduler) Arm(at int64) {
	now := sc.s.now()
	sc.mu.Lock()
	if sc.inRound {
		if sc.armed == 0 || at < sc.armed {
			sc.armed = at
		}
		sc.mu.Unlock()
		return
	}
	// A timer whose time the clock has passed either has just fired (a
	// poke more is harmless) or waits on: the wall clock stepped forward
	// past it (see maxTimerWait), and at may fall due long before it ends.
	earlier := sc.next == 0 || at < sc.next || sc.next <= now
	sc.mu.Unlock()
	if earlier {
		sc.poke()
	}
}

func (sc *Scheduler) poke() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// run fires due deadlines until ctx is done.
func (sc *Scheduler) run(ctx context.Context) {
	defer sc.setTimer(0)
	for {
		sc.mu.Lock()
		sc.inRound = true
		sc.mu.Unlock()
		next, err := sc.round(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			sc.s.log.Error("deadline scheduler", "err", err)
			sc.endRound(sc.s.now() + retryDelay.Milliseconds())
		default:
			sc.endRound(sc.poll(next)) // 0: nothing pending
		}
		select {
		case <-ctx.Done():
			return
		case <-sc.wake:
		}
	}
}

// round expires everything due now and returns the next deadline.
func (sc *Scheduler) round(ctx context.Context) (int64, error) {
	if cl, ok := sc.s.store.(DeadlineClaimer); ok {
		return sc.claimRound(ctx, cl)
	}
	for {
		due, err := sc.s.store.DueDeadlines(ctx, sc.s.now(), dueBatch)
		if err != nil {
			return 0, err
		}
		if failed := sc.expireAll(ctx, due); failed > 0 {
			// Retry later rather than spin on a deadline that keeps failing.
			return 0, fmt.Errorf("%d of %d deadlines failed to expire", failed, len(due))
		}
		if len(due) < dueBatch {
			break
		}
	}
	return sc.s.store.NextDeadline(ctx)
}

func (sc *Scheduler) expireAll(ctx context.Context, due []Deadline) (failed int64) {
	var wg sync.WaitGroup
	var failures atomic.Int64
	sem := make(chan struct{}, expireParallel)
	for _, d := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := sc.s.Expire(ctx, d); err != nil && ctx.Err() == nil {
				sc.s.log.Error("expire deadline", "call", d.CallID, "user", d.UserID, "kind", d.Kind, "err", err)
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	return failures.Load()
}

// poll bounds the wait for next (Unix ms, 0: none) by Config.DeadlinePoll
// when set: in a cluster a deadline may be created by a node that dies
// before firing it, earlier than anything this node's timer knows, and
// only reading the store again finds it.
func (sc *Scheduler) poll(next int64) int64 {
	p := sc.s.cfg.DeadlinePoll
	if p <= 0 {
		return next
	}
	limit := sc.s.now() + p.Milliseconds()
	if next == 0 || next > limit {
		return limit
	}
	return next
}

// claimParallel is how many claiming transactions one node runs at once,
// and claimBatch how many deadlines each takes, unless the store says
// otherwise (DeadlineBatcher): several small batches let PostgreSQL
// group-commit them, and keep each transaction's locks short.
const (
	claimParallel = 4
	claimBatch    = 32
	// claimBackoff is how long a node waits when everything due is held by
	// other transactions (other nodes firing it): they are about to commit.
	// Real time, not the Clock's.
	claimBackoff = 50 * time.Millisecond
)

// claimRound is round over a DeadlineClaimer: parallel workers (see
// claimBatching) each claim and fire batches until nothing due is left
// unclaimed. Due deadlines that other transactions hold (other nodes
// firing them) are looked at again after claimBackoff of real time (lock
// holders are real transactions, whatever the clock), until none is left.
//
// A deadline that fell due while the workers ran (after began) is not held
// by anyone: the workers' last claims came before it was due. It is
// claimed again at once; backing off for it would make every deadline
// that falls due during a round claimBackoff late, which at a steady rate
// of deadlines is a good share of them.
func (sc *Scheduler) claimRound(ctx context.Context, cl DeadlineClaimer) (int64, error) {
	b := claimBatching(cl)
	for {
		began := sc.s.now()
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for range b.Parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				claim := sc.claimAll
				if b.Pipelined {
					claim = sc.claimPipelined
				}
				if err := claim(ctx, cl, b.Batch); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return 0, fmt.Errorf("fire claimed deadlines: %w", errs[0])
		}
		next, err := sc.s.store.NextDeadline(ctx)
		if err != nil || next == 0 || next > sc.s.now() {
			return next, err
		}
		if next > began {
			continue // fell due during the claims: nobody holds it
		}
		sc.backoffs.Add(1)
		t := time.NewTimer(claimBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// claimAll claims and fires batches of deadlines through cl, one after the
// other, until a claim finds nothing due or fails.
func (sc *Scheduler) claimAll(ctx context.Context, cl DeadlineClaimer, batch int) error {
	for ctx.Err() == nil {
		n, err := sc.s.expireClaimed(ctx, cl, batch, nil)
		if err != nil || n == 0 {
			return err
		}
	}
	return nil
}

// claimPipelined is claimAll for a store whose claims pipeline
// (ClaimBatching.Pipelined): the next claim is queued as soon as the last
// one's fn has fired its deadlines, while that one is made durable, and
// once the one before it has been answered, so at most two are in flight.
// Without it, one claim on SQLite left the writer idle for every fsync and
// for the scheduler's turn around (BenchmarkFireDeadlines in db/sqlite
// measures the two ways). The bound of two keeps what a request waits
// behind to one claim running and one queued.
func (sc *Scheduler) claimPipelined(ctx context.Context, cl DeadlineClaimer, batch int) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	prev := make(chan struct{}) // answered when closed
	close(prev)
claims:
	for ctx.Err() == nil {
		var (
			ran  = make(chan int, 1) // the deadlines fn was given, in its first run that returned nil
			done = make(chan struct{})
			n    int
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			var err error
			n, err = sc.s.expireClaimed(ctx, cl, batch, ran)
			if err != nil {
				mu.Lock()
				fail = cmp.Or(fail, err)
				mu.Unlock()
			}
		}()
		select {
		case given := <-ran:
			if given == 0 {
				break claims // nothing left to claim
			}
		case <-done: // failed, or fn never said
			if n == 0 {
				break claims
			}
		}
		<-prev
		prev = done
		mu.Lock()
		failed := fail != nil
		mu.Unlock()
		if failed {
			break
		}
	}
	wg.Wait()
	return fail
}

// claimBatching returns how the store asks the Scheduler to claim
// deadlines, when it does (with a positive Parallel and Batch); else
// claimParallel claims of claimBatch deadlines each, not pipelined.
func claimBatching(cl DeadlineClaimer) ClaimBatching {
	if b, ok := cl.(DeadlineBatcher); ok {
		if cb := b.DeadlineBatching(); cb.Parallel > 0 && cb.Batch > 0 {
			return cb
		}
	}
	return ClaimBatching{Parallel: claimParallel, Batch: claimBatch}
}

// endRound sets the timer for at (Unix ms; 0: none) or for the earliest
// deadline armed during the round, if earlier. Both in one critical
// section with the end of inRound: an Arm in between would compare its
// deadline with a stale next.
func (sc *Scheduler) endRound(at int64) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.armed != 0 && (at == 0 || sc.armed < at) {
		at = sc.armed
	}
	sc.inRound, sc.armed = false, 0
	sc.setTimerLocked(at)
}

// setTimer replaces the pending timer with one that pokes the loop at at
// (Unix ms; 0: none).
func (sc *Scheduler) setTimer(at int64) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.setTimerLocked(at)
}

func (sc *Scheduler) setTimerLocked(at int64) {
	if sc.timer != nil {
		sc.timer.Stop()
		sc.timer = nil
	}
	if at > 0 {
		at = min(at, sc.s.now()+maxTimerWait.Milliseconds())
	}
	sc.next = at
	if at <= 0 {
		return
	}
	sc.timer = TimerAt(sc.s.clock, at, sc.poke) // a stale poke only runs a round more
}

// armBatch is how many calls one startup arming transaction handles, so a
// restart with many tracked calls never holds the writer for long.
const armBatch = 500

// armRetryMax caps the wait between two attempts of a startup arming
// transaction that failed; the first retry comes after retryDelay.
const armRetryMax = 30 * time.Second

// Run re-arms the caller-offline grace of the calls the rule watches (after
// a start no stream has been open for them yet), then fires deadlines until
// ctx is done. It returns nil once ctx is done, or the error that kept it
// from arming.
//
// An arming transaction the store cannot serve now (ErrUnavailable: the
// store out of reach as the server starts, say) is logged and tried again,
// in real time, until it commits: returning it would stop the whole server
// (see app.App.Run) and end every open stream over a passing outage, and
// while the store cannot serve, no deadline would fire anyway. Any other
// failure is returned: a server whose deadlines cannot be armed must not go
// on answering as if whole.
func (s *Service) Run(ctx context.Context) error {
	if err := s.armCallersAtStart(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.sched.run(ctx)
	return nil
}

// armCallersAtStart treats every tracked caller with no grace armed (one
// connected at the stop) as just gone offline,
// through the same pure CallerPresence (and so the same predicate) that
// UserOffline uses. A caller whose stream is already open again is skipped:
// Run may start after the HTTP server, and Presence turns online before
// UserOnline runs, so either this transaction sees the caller online, or
// UserOnline's later transaction clears what this one armed.
//
// A batch the store cannot serve now is retried from where it began, with
// a growing wait; what earlier batches armed stays armed.
func (s *Service) armCallersAtStart(ctx context.Context) error {
	var after int64
	wait := retryDelay
	for {
		n, last, err := s.armCallersBatch(ctx, after)
		if err != nil {
			if ctx.Err() != nil || !errors.Is(err, ErrUnavailable) {
				return err
			}
			s.log.Error("arm caller-offline deadlines; retrying", "err", err, "retry_in", wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			wait = min(2*wait, armRetryMax)
			continue
		}
		wait = retryDelay
		if n < armBatch {
			return nil
		}
		after = last
	}
}

// armCallersBatch arms, in one transaction, the grace of up to armBatch
// tracked calls after sequence number after; it returns how many it looked
// at and the last sequence number among them.
func (s *Service) armCallersBatch(ctx context.Context, after int64) (n int, last int64, err error) {
	var changes []*Change
	err = s.store.Update(ctx, func(tx Tx) error {
		changes, last = changes[:0], after // fn may run again (see Store.Update)
		list, err := tx.TrackedCallerOfflineCalls(ctx, after, armBatch)
		if err != nil {
			return err
		}
		n = len(list)
		now := s.now()
		// Each caller is looked up once a batch: in a cluster a lookup is
		// a query, made while the batch holds its calls locked. Under the
		// locks, not before them: a caller whose stream opens between a
		// lookup made first and the locks would have its online report
		// run and find no grace to clear, and the grace armed after it
		// would cancel a connected caller's calls. Looked up under the
		// locks, the presence row is either seen, or written before an
		// online report that waits for these locks and then clears it.
		online := map[string]bool{}
		for _, c := range list {
			last = max(last, c.Seq)
			if c.CallerOfflineAt > 0 {
				// Armed when the caller left (or by a node's sweep): a
				// restart must not postpone it. A caller gone before the
				// stop is not the stop's doing, and a server restarting
				// in a loop (or, in a cluster, every node of a rolling
				// restart) would keep the call ringing for good. Past
				// due, it fires right after the start. Only the callers
				// connected at the stop, unarmed, get the grace from now.
				continue
			}
			on, seen := online[c.Caller]
			if !seen {
				// Unknown counts as online: arming the grace of a caller
				// connected to another node would cancel its calls.
				on = s.online(ctx, c.Caller, true)
				online[c.Caller] = on
			}
			if on {
				continue
			}
			if ch := CallerPresence(c, false, now, s.cfg.HeartbeatTimeout); ch != nil {
				if err := tx.Save(ctx, ch); err != nil {
					return err
				}
				changes = append(changes, ch)
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("arm caller-offline deadlines: %w", err)
	}
	for _, ch := range changes {
		s.committed(ch)
	}
	return n, last, nil
}

// expireClaimed fires up to limit due deadlines claimed through cl in one
// transaction, each as Service.Expire would (see expire), and
// returns how many it was given. When ran is not nil, it gets how many
// deadlines fn was given, once fn has run through without an error for
// the first time (claimPipelined).
func (s *Service) expireClaimed(ctx context.Context, cl DeadlineClaimer, limit int, ran chan<- int) (int, error) {
	var (
		changes []*Change
		claimed []Deadline
	)
	n, err := cl.UpdateDue(ctx, s.now(), limit, func(tx Tx, due []Deadline) error {
		changes = changes[:0]
		claimed = append(claimed[:0], due...)
		if len(due) == 0 {
			tell(ran, 0)
			return nil // nothing in this run; an earlier one's changes are gone
		}
		now := s.now()
		unknown := false // presence could not tell (see expire)
		// The claim holds several calls: their users are locked first, all
		// in one order (UserLocker), as every other change does, so firing
		// them never deadlocks with a request over the same users.
		loaded, err := loadClaimed(ctx, tx, due)
		if err != nil {
			return err
		}
		var users []string
		for _, c := range loaded {
			if c == nil {
				continue
			}
			for _, u := range c.Users {
				users = append(users, u.UserID)
			}
		}
		if err := lockUsers(ctx, tx, users); err != nil {
			return err
		}
		for _, d := range due {
			c, ok := loaded[d.CallID]
			if ok && c == nil {
				continue // gone
			}
			if !ok { // changed by an earlier deadline of this batch: read it again
				var err error
				if c, err = tx.Call(ctx, d.CallID); err != nil {
					return err
				}
			}
			ch, err := s.fire(ctx, tx, c, d, now, &unknown)
			if err != nil {
				return err
			}
			if ch == nil {
				loaded[d.CallID] = c // unchanged
				continue
			}
			delete(loaded, d.CallID)
			changes = append(changes, ch)
		}
		tell(ran, len(due))
		return nil
	})
	if err != nil {
		return s.expireEach(ctx, claimed, err)
	}
	for _, ch := range changes {
		s.committed(ch)
	}
	return n, nil
}

// tell sends n on ran, unless ran is nil or full: fn runs again when the
// writer replays its batch, and only the first count is read.
func tell(ran chan<- int, n int) {
	if ran == nil {
		return
	}
	select {
	case ran <- n:
	default:
	}
}

// loadClaimed loads the calls of due deadlines for update, each once (nil:
// gone), all at once where the store can (CallsLoader).
func loadClaimed(ctx context.Context, tx Tx, due []Deadline) (map[string]*Call, error) {
	loaded := make(map[string]*Call, len(due))
	ids := make([]string, 0, len(due))
	for _, d := range due {
		if _, ok := loaded[d.CallID]; !ok {
			loaded[d.CallID] = nil
			ids = append(ids, d.CallID)
		}
	}
	if l, ok := tx.(CallsLoader); ok {
		found, err := l.Calls(ctx, ids)
		if err != nil {
			return nil, err
		}
		for id, c := range found {
			loaded[id] = c
		}
		return loaded, nil
	}
	for _, id := range ids {
		c, err := tx.Call(ctx, id)
		if errors.Is(err, ErrCallNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		loaded[id] = c
	}
	return loaded, nil
}

// expireEach fires, each in its own transaction, the deadlines of a claim
// that failed with err, so that one deadline that cannot be fired (a bad
// row, a bug in a transition) does not hold back the others claimed with
// it, round after round. It returns how many it was given, or err when
// none of them could be fired (nothing was claimed; the store is down;
// every one fails), which ends the round until it is retried.
func (s *Service) expireEach(ctx context.Context, claimed []Deadline, err error) (int, error) {
	if len(claimed) == 0 || ctx.Err() != nil || errors.Is(err, ErrUnavailable) {
		return 0, err
	}
	s.log.Warn("a claim of deadlines failed: firing them one by one", "deadlines", len(claimed), "err", err)
	fired := 0
	for _, d := range claimed {
		if ferr := s.Expire(ctx, d); ferr != nil {
			if ctx.Err() == nil {
				s.log.Error("expire deadline", "call", d.CallID, "user", d.UserID, "kind", d.Kind, "err", ferr)
			}
			continue
		}
		fired++
	}
	if fired == 0 {
		return 0, err
	}
	return len(claimed), nil
}
