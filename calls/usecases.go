package calls

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Invite starts a call from actor to in.Invitees (POST /calls).
func (s *Service) Invite(ctx context.Context, actor Actor, in InviteInput) (*InviteResult, error) {
	id := s.newID()
	idem := NewIdempotentRun(ctx)
	var (
		ch  *Change
		res *InviteResult
	)
	err := s.store.Update(ctx, func(tx Tx) error {
		ch, res = nil, nil
		if replay, err := idem.Recorded(ctx, tx); replay || err != nil {
			return err
		}
		if err := lockUsers(ctx, tx, append([]string{actor.UserID}, in.Invitees...)); err != nil {
			return err
		}
		busy, err := s.inviteChecks(ctx, tx, actor, in, id)
		if err != nil {
			return err
		}
		var errUsers []ErrorUser
		ch, errUsers, err = NewCall(id, actor, in, s.now(), s.cfg, s.online(ctx, actor.UserID, false), NewBusy(busy))
		if err != nil {
			return err
		}
		s.resolvePush(ctx, ch)
		if err := tx.Save(ctx, ch); err != nil {
			return err
		}
		c := ch.Call
		res = &InviteResult{CallID: c.ID, Timeout: c.Timeout, ErrorUserList: errUsers, BusyUsers: ch.BusyUsers, Call: c.Info()}
		return idem.Record(ctx, tx, res)
	})
	if err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	idem.Committed()
	if ch != nil {
		s.committed(ch)
		s.recheckCaller(ctx, ch.Call)
	}
	return res, nil
}

// recheckCaller arms the grace of a call created tracked whose caller is
// offline once it committed. With presence in the store (SharedPresence:
// PostgreSQL), the caller's last stream may close while the creation's
// transaction, which read the caller online, is still open: the offline
// report then reads the caller's calls without this one (uncommitted), and
// the call stayed tracked and never armed, so it was never cancelled (a
// review). Asked after the commit, presence tells whether such a report
// may have missed it; the report run again arms it (and any other it
// missed so). Its grace counts from now rather than from the close. On
// SQLite the one writer orders the report after the creation anyway.
func (s *Service) recheckCaller(ctx context.Context, c *Call) {
	if !s.cfg.SharedPresence || !c.CallerTracked || s.online(ctx, c.Caller, true) {
		return
	}
	if err := s.callerPresence(ctx, c.Caller, false, time.Time{}); err != nil {
		s.log.Warn("caller gone as its call was created: its grace may not be armed until the next report or start", "call", c.ID, "caller", c.Caller, "err", err)
	}
}

// inviteChecks reads, in a new call's transaction, which invitees are
// busy, and refuses the call (409 invalid_state) when the caller is
// accepted in Config.MaxStartedCalls started calls already. The caller is
// asked with the invitees (one read): only a caller busy somewhere is
// counted. General calls too: one ends once its invitees answered or
// timed out, but within a 600-s timeout a caller at the rate limit held
// some 30,000 pending, and each open and close of its stream rewrote
// every one of them on the writer (the caller-offline timers: a review
// measured one such toggle at 593 calls' creation worth of the writer).
func (s *Service) inviteChecks(ctx context.Context, tx Tx, actor Actor, in InviteInput, callID string) ([]string, error) {
	invitees := in.Invitees
	limit := s.cfg.MaxStartedCalls
	if limit <= 0 {
		return tx.BusyUsers(ctx, invitees, callID)
	}
	busy, err := tx.BusyUsers(ctx, append(slices.Clone(invitees), actor.UserID), callID)
	if err != nil {
		return nil, err
	}
	i := slices.Index(busy, actor.UserID)
	if i < 0 {
		return busy, nil
	}
	busy = slices.Delete(busy, i, i+1)
	n, err := tx.StartedCalls(ctx, actor.UserID, limit)
	if err != nil {
		return nil, err
	}
	if n >= limit {
		return nil, errorf(CodeInvalidState, "you are in %d started calls, the most a user may be in to start another: end, quit or cancel one first", n)
	}
	return busy, nil
}

// Cancel cancels pending invitations the actor sent.
func (s *Service) Cancel(ctx context.Context, actor Actor, callID string, in CancelInput) (*CancelResult, error) {
	var errInvitees []string
	return mutate(s, ctx, "cancel", callID, func(c *Call, now int64) (ch *Change, err error) {
		ch, errInvitees, err = Cancel(c, actor, in, now)
		return ch, err
	}, func(*Change) *CancelResult {
		return &CancelResult{CallID: callID, ErrorInvitees: errInvitees}
	})
}

// Accept accepts the actor's pending invitation.
func (s *Service) Accept(ctx context.Context, actor Actor, callID, extendedData string) (*ActionResult, error) {
	return s.answer(ctx, actor, callID, true, extendedData)
}

// Reject rejects the actor's pending invitation.
func (s *Service) Reject(ctx context.Context, actor Actor, callID, extendedData string) (*ActionResult, error) {
	return s.answer(ctx, actor, callID, false, extendedData)
}

func (s *Service) answer(ctx context.Context, actor Actor, callID string, accept bool, ext string) (*ActionResult, error) {
	op := map[bool]string{true: "accept", false: "reject"}[accept]
	return mutate(s, ctx, op, callID, func(c *Call, now int64) (*Change, error) {
		return Answer(c, actor, accept, ext, now)
	}, func(*Change) *ActionResult {
		return &ActionResult{CallID: callID}
	})
}

// CallingInvite invites more users into an advanced call. Who of them is
// busy is read in the invitation's transaction.
func (s *Service) CallingInvite(ctx context.Context, actor Actor, callID string, in CallingInviteInput) (*CallingInviteResult, error) {
	var errUsers []ErrorUser
	return mutateTx(s, ctx, "invite", callID, func(tx Tx, c *Call, now int64) (ch *Change, err error) {
		// Everyone the invitation may address: the call's users and the
		// invitees, locked together before the busy check locks the
		// invitees alone (see UserLocker).
		users := slices.Clone(in.Invitees)
		for _, u := range c.Users {
			users = append(users, u.UserID)
		}
		if err := lockUsers(ctx, tx, users); err != nil {
			return nil, err
		}
		busy, err := tx.BusyUsers(ctx, in.Invitees, c.ID)
		if err != nil {
			return nil, err
		}
		ch, errUsers, err = CallingInvite(c, actor, in, now, s.cfg, NewBusy(busy))
		return ch, err
	}, func(ch *Change) *CallingInviteResult {
		res := &CallingInviteResult{CallID: callID, ErrorUserList: errUsers, BusyUsers: []string{}}
		if ch != nil {
			res.BusyUsers = ch.BusyUsers
		}
		return res
	}, in.Invitees...)
}

// Join joins an advanced call or moves the actor's main device. The answer
// carries the call's extendedData (what it was created with), which a user
// who joins uninvited has not seen yet.
func (s *Service) Join(ctx context.Context, actor Actor, callID, extendedData string) (*JoinResult, error) {
	return mutate(s, ctx, "join", callID, func(c *Call, now int64) (*Change, error) {
		return Join(c, actor, extendedData, now, s.cfg)
	}, func(ch *Change) *JoinResult {
		c := ch.Call
		return &JoinResult{CallID: callID, CreateTime: c.CreateTime, JoinTime: ch.now, ExtendedData: c.ExtendedData, CallUserList: c.Info().CallUserList}
	}, actor.UserID)
}

// Quit leaves an advanced call.
func (s *Service) Quit(ctx context.Context, actor Actor, callID string, in LeaveInput) (*QuitResult, error) {
	var acceptTime int64
	return mutate(s, ctx, "quit", callID, func(c *Call, now int64) (*Change, error) {
		if u := c.User(actor.UserID); u != nil {
			acceptTime = u.AcceptTime
		}
		return Quit(c, actor, in, now)
	}, func(ch *Change) *QuitResult {
		return &QuitResult{CallID: callID, CreateTime: ch.Call.CreateTime, AcceptTime: acceptTime, QuitTime: ch.now}
	})
}

// End ends an advanced call for everyone.
func (s *Service) End(ctx context.Context, actor Actor, callID string, in LeaveInput) (*EndResult, error) {
	return mutate(s, ctx, "end", callID, func(c *Call, now int64) (*Change, error) {
		return End(c, actor, in, now)
	}, func(ch *Change) *EndResult {
		c := ch.Call
		return &EndResult{CallID: callID, CreateTime: c.CreateTime, AcceptTime: c.User(actor.UserID).AcceptTime, EndTime: c.EndTime}
	})
}

// Get returns a call the actor is in.
func (s *Service) Get(ctx context.Context, actor Actor, callID string) (*CallInfo, error) {
	c, err := s.store.Call(ctx, callID)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", callID, err)
	}
	if _, err := member(c, actor.UserID); err != nil {
		return nil, err
	}
	info := c.Info()
	return &info, nil
}

// List pages through the calls the actor is or was in, newest first.
// nextFlag 0 starts at the newest; a returned NextFlag of 0 means no more.
func (s *Service) List(ctx context.Context, actor Actor, count int, nextFlag int64) (*ListResult, error) {
	switch {
	case count <= 0:
		count = DefaultListCount
	case count > MaxListCount:
		count = MaxListCount
	}
	if nextFlag < 0 {
		return nil, invalid("nextFlag", "must not be negative")
	}
	list, err := s.store.ListCalls(ctx, actor.UserID, nextFlag, count+1)
	if err != nil {
		return nil, fmt.Errorf("list calls of %s: %w", actor.UserID, err)
	}
	res := &ListResult{CallList: make([]CallInfo, 0, len(list))}
	if len(list) > count {
		list = list[:count]
		res.NextFlag = list[count-1].Seq
	}
	for _, c := range list {
		res.CallList = append(res.CallList, c.Info())
	}
	return res, nil
}

// MarkDelivered records that userID's invitation to callID, the one sent
// at invitedAt (its event's Time; 0: whichever is pending), was flushed to
// one of its streams: inviting or notYetReceived becomes received.
func (s *Service) MarkDelivered(ctx context.Context, callID, userID string, invitedAt int64) error {
	_, err := mutate[struct{}](s, ctx, "mark delivered", callID, func(c *Call, now int64) (*Change, error) {
		return Delivered(c, userID, invitedAt, now), nil
	}, nil)
	return err
}

// Expire fires one due deadline; see expire.
func (s *Service) Expire(ctx context.Context, d Deadline) error {
	_, err := mutate[struct{}](s, ctx, "expire "+string(d.Kind), d.CallID, func(c *Call, now int64) (*Change, error) {
		return s.expire(ctx, c, d, now, new(bool)), nil
	}, nil)
	return err
}

// expire is the pure Expire, except for a caller-offline grace that ends
// while the caller has a stream again: its report (UserOnline) is still
// on its way (the hub's workers busy, or the store briefly out of reach
// for it), and ending the call would cancel the calls of a caller who is
// connected. The grace is cleared instead, as that report would; should
// the caller leave again, its offline report arms a new one. A presence
// that cannot tell counts as offline: the grace ends as armed, and
// *unknown is set, after which expire asks no more (each question may
// wait out the presence's own bound, and a claim of deadlines holds its
// calls' rows meanwhile).
func (s *Service) expire(ctx context.Context, c *Call, d Deadline, now int64, unknown *bool) *Change {
	if d.Kind == DeadlineCallerOffline && !*unknown && c.State != CallEnded && c.CallerOfflineAt != 0 &&
		c.CallerOfflineAt <= now && CallerOfflineApplies(c) {
		on, known := s.checkOnline(ctx, c.Caller)
		*unknown = !known
		if on {
			return CallerPresence(c, true, now, s.cfg.HeartbeatTimeout)
		}
	}
	return expire(c, d, now, s.cfg.HeartbeatTimeout)
}

// UserOnline is called when a user's first stream opens, after Presence
// reports the user online: the caller-offline timers of its calls stop,
// and those calls become tracked.
func (s *Service) UserOnline(ctx context.Context, userID string) error {
	return s.callerPresence(ctx, userID, true, time.Time{})
}

// UserOffline is called when a user's last stream closes, at since (zero:
// now): its tracked calls get cancelled unless it comes back within the
// grace period, counted from since however late the report is made.
func (s *Service) UserOffline(ctx context.Context, userID string, since time.Time) error {
	return s.callerPresence(ctx, userID, false, since)
}

func (s *Service) callerPresence(ctx context.Context, userID string, online bool, since time.Time) error {
	// In pages of presenceBatch calls, one transaction each: a caller with
	// thousands of started calls must not hold the writer (and every other
	// request behind it) for all of them at once. Each page is idempotent,
	// so a failure part-way leaves earlier pages applied, as a later report
	// would apply them anyway.
	for after := int64(0); ; {
		var (
			changes []*Change
			n       int
			last    int64
		)
		err := s.store.Update(ctx, func(tx Tx) error {
			changes = changes[:0]
			list, err := tx.CallerOfflineCalls(ctx, userID, after, presenceBatch)
			if err != nil {
				return err
			}
			n = len(list)
			now := s.now()
			from := now
			if !since.IsZero() {
				from = since.UnixMilli()
			}
			for _, c := range list {
				last = c.Seq
				var ch *Change
				if online {
					ch = CallerPresence(c, true, now, s.cfg.HeartbeatTimeout)
				} else {
					ch = CallerOffline(c, from, now, s.cfg.HeartbeatTimeout)
				}
				if ch != nil {
					if err := tx.Save(ctx, ch); err != nil {
						return err
					}
					changes = append(changes, ch)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("caller presence of %s: %w", userID, err)
		}
		for _, ch := range changes {
			s.committed(ch)
		}
		if n < presenceBatch {
			return nil
		}
		after = last
	}
}

// presenceBatch is how many of a caller's calls one presence transaction
// handles (see callerPresence).
const presenceBatch = 200

// mutate runs one transition on one call in one transaction. The clock is
// read inside the transaction, so times follow commit order. result builds
// the use-case's answer from the change (nil when the transition changed
// nothing, e.g. a calling invite refused for every invitee) inside the
// same transaction, so
// that an Idempotency in ctx records it with the change (nil: no answer,
// for the internal use-cases). On a replay nothing is applied and the zero
// R is returned: the answer is the Idempotency's Response.
func mutate[R any](s *Service, ctx context.Context, op, callID string, f func(c *Call, now int64) (*Change, error), result func(*Change) R, also ...string) (R, error) {
	return mutateTx(s, ctx, op, callID, func(_ Tx, c *Call, now int64) (*Change, error) { return f(c, now) }, result, also...)
}

// mutateTx is mutate for a transition that needs more facts from the
// store than the call itself (read with tx, in the same transaction).
//
// The call's deadlines past due are fired first, in the same transaction
// (settle). When the transition then refuses the action (a 4xx of the
// contract: the invitation it answers timed out, say), what they fired is
// still committed, and the refusal returned after. also names the users
// the action may add to the call (a joiner, invitees): they are locked
// with the call's, in one order, should a deadline be settled first.
func mutateTx[R any](s *Service, ctx context.Context, op, callID string, f func(tx Tx, c *Call, now int64) (*Change, error), result func(*Change) R, also ...string) (R, error) {
	var (
		ch      *Change
		res     R
		settled []*Change
		refused error
	)
	idem := NewIdempotentRun(ctx)
	if result == nil {
		idem = nil
	}
	err := s.store.Update(ctx, func(tx Tx) error {
		var zero R
		ch, res, settled, refused = nil, zero, settled[:0], nil
		if replay, err := idem.Recorded(ctx, tx); replay || err != nil {
			return err
		}
		c, err := tx.Call(ctx, callID)
		if err != nil {
			return err
		}
		now := s.now()
		if c, settled, err = s.settle(ctx, tx, c, now, settled, also); err != nil {
			return err
		}
		ch, err = f(tx, c, now)
		var domain *Error
		if err != nil && len(settled) > 0 && errors.As(err, &domain) {
			ch, refused = nil, err
			return nil
		}
		if err != nil {
			return err
		}
		if ch != nil {
			s.resolvePush(ctx, ch)
			if err := tx.Save(ctx, ch); err != nil {
				return err
			}
		}
		if result == nil {
			return nil
		}
		res = result(ch)
		return idem.Record(ctx, tx, res)
	})
	if err != nil {
		var zero R
		return zero, fmt.Errorf("%s %s: %w", op, callID, err)
	}
	for _, sc := range settled {
		s.committed(sc)
	}
	if refused != nil {
		var zero R
		return zero, fmt.Errorf("%s %s: %w", op, callID, refused)
	}
	idem.Committed()
	if ch != nil {
		s.committed(ch)
	}
	return res, nil
}

// settle fires the deadlines of c past due at now (DueDeadlines), each as
// the scheduler would (expire), saving each change in tx, and returns the
// call as they left it and the changes, appended to into. Without it an
// action that comes before the scheduler has fired a deadline (a restart,
// many falling due at once) acts on the call as it was: accepting an
// invitation past its timeout, or saving a call whose caller's offline
// grace has run out. The users of the call, and also (the users the action
// may add), are locked first, in one order (UserLocker): locked later, in
// a statement of their own, those the action adds would be taken out of
// order, and PostgreSQL found deadlocks with a change over the same users
// (a review: a settling join against an invitation by the joiner).
func (s *Service) settle(ctx context.Context, tx Tx, c *Call, now int64, into []*Change, also []string) (*Call, []*Change, error) {
	due := DueDeadlines(c, now)
	if len(due) == 0 {
		return c, into, nil
	}
	users := slices.Clone(also)
	for _, u := range c.Users {
		users = append(users, u.UserID)
	}
	if err := lockUsers(ctx, tx, users); err != nil {
		return nil, into, err
	}
	unknown := false // presence could not tell (see expire)
	for _, d := range due {
		ch, err := s.fire(ctx, tx, c, d, now, &unknown)
		if err != nil {
			return nil, into, fmt.Errorf("settle: %w", err)
		}
		if ch == nil {
			continue
		}
		into = append(into, ch)
		if c, err = tx.Call(ctx, c.ID); err != nil {
			return nil, into, err
		}
	}
	return c, into, nil
}

// fire fires the deadline d of c (expire) and saves its change in tx,
// with the pushes it asks for; nil when it changed nothing. The scheduler
// (expireClaimed) and an action (settle) fire deadlines alike.
func (s *Service) fire(ctx context.Context, tx Tx, c *Call, d Deadline, now int64, unknown *bool) (*Change, error) {
	ch := s.expire(ctx, c, d, now, unknown)
	if ch == nil {
		return nil, nil
	}
	s.resolvePush(ctx, ch)
	if err := tx.Save(ctx, ch); err != nil {
		return nil, fmt.Errorf("expire %s of %s: %w", d.Kind, d.CallID, err)
	}
	return ch, nil
}

// resolvePush turns a push request into call.push_requested webhooks for
// the users with no open stream; it runs inside the transaction so the
// webhooks commit with the change. A user whose presence is unknown gets
// the push: one notification too many beats an offline user never rung.
func (s *Service) resolvePush(ctx context.Context, ch *Change) {
	p := ch.push
	if p == nil {
		return
	}
	for _, u := range p.users {
		if !s.online(ctx, u, false) {
			ch.Hooks = append(ch.Hooks, HookEvent{
				Type: HookPushRequested, CallID: ch.Call.ID, Time: ch.now,
				Data: mustJSON(pushRequestedHookData{CallID: ch.Call.ID, UserID: u, Kind: p.kind, PushConfig: p.config}),
			})
		}
	}
	ch.push = nil
}

// committed wakes delivery and the scheduler after a durable commit.
func (s *Service) committed(ch *Change) {
	s.notifier.Committed(ch.Events, ch.HooksQueued)
	if ch.Deadline > 0 {
		s.sched.Arm(ch.Deadline)
	}
}

func (s *Service) now() int64 { return s.clock.Now().UnixMilli() }

// online asks Presence whether userID has a stream. When a CheckedPresence
// cannot tell, it answers ifUnknown, the answer safe for the asker: false
// where "offline" costs at most a push too many or a call not watched by
// the caller-offline rule, true where "offline" would arm a grace period
// that cancels the calls of a caller who may be connected.
func (s *Service) online(ctx context.Context, userID string, ifUnknown bool) bool {
	on, known := s.checkOnline(ctx, userID)
	if !known {
		return ifUnknown
	}
	return on
}

// checkOnline asks Presence whether userID has a stream, and says whether
// it could tell.
func (s *Service) checkOnline(ctx context.Context, userID string) (on, known bool) {
	cp, ok := s.presence.(CheckedPresence)
	if !ok {
		return s.presence.Online(userID), true
	}
	on, err := cp.CheckOnline(ctx, userID)
	if err != nil {
		s.log.Warn("presence unknown", "user", userID, "err", err)
		return false, false
	}
	return on, true
}

// lockUsers takes the users' rows first when the store locks per user
// (UserLocker); a no-op otherwise (SQLite's single writer).
func lockUsers(ctx context.Context, tx Tx, users []string) error {
	l, ok := tx.(UserLocker)
	if !ok {
		return nil
	}
	return l.LockUsers(ctx, users)
}
