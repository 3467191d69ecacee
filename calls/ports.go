package calls

import (
	"context"
	"time"
)

// Store persists calls, the per-user event log and the webhook outbox.
// Implementations live under db/ (db/sqlite, db/postgres; each runs
// db/storetest).
type Store interface {
	// Update runs fn in a write transaction serialized with every other write.
	// Everything fn saves commits together, or nothing does when fn returns an
	// error. Update returns only once the commit is durable, so a caller may
	// acknowledge the request. Implementations may commit several concurrent
	// Updates in one transaction (group commit); each fn still sees the effects
	// of the ones before it and fails alone. fn may run more than once: a
	// store whose database aborts a transaction to resolve a conflict
	// (PostgreSQL's deadlock or serialization failure) rolls it back and runs
	// fn again, and the SQLite writer replays a group commit in which a
	// change failed after writing (db/sqlite/writer.go); so fn reads only
	// through tx and keeps nothing of a run that did not commit (the
	// Service's fns reset what they build on entry).
	Update(ctx context.Context, fn func(Tx) error) error
	// Call loads a committed call with all its users, or ErrCallNotFound.
	Call(ctx context.Context, callID string) (*Call, error)
	// ListCalls returns the calls userID is or was in, newest first, with
	// Seq < before (before <= 0: from the newest), at most limit of them.
	ListCalls(ctx context.Context, userID string, before int64, limit int) ([]*Call, error)
	// DueDeadlines returns up to limit deadlines with At <= now, earliest first.
	DueDeadlines(ctx context.Context, now int64, limit int) ([]Deadline, error)
	// NextDeadline returns the earliest pending deadline, or 0 when none.
	NextDeadline(ctx context.Context) (int64, error)
}

// DeadlineClaimer is an optional Store capability: the Scheduler fires
// several due deadlines in one transaction that claims them. A store that
// several nodes share passes over the deadlines another node is firing
// instead of waiting for them and finding them done (PostgreSQL); a
// single writer saves a transaction, a savepoint and a request per
// deadline (SQLite). Without it the Scheduler reads DueDeadlines and fires
// each through Service.Expire, its own write.
type DeadlineClaimer interface {
	// UpdateDue runs fn in one write transaction (as Update, fn may run
	// more than once) with up to limit deadlines due at now, in At order,
	// whose calls the transaction has locked; calls another transaction
	// holds are passed over, and a deadline another transaction fired is
	// never handed out. It returns how many due deadlines it claimed (0:
	// nothing due that is not being handled elsewhere; fn may have been
	// given fewer when claimed ones were fired meanwhile). fn is called in
	// every run of the transaction, with due empty when that run has
	// nothing to fire, so that it drops what an earlier run built: a run
	// that did not commit may have been given deadlines the last one was
	// not. fn fires each through the pure Expire, which reads the call in
	// the transaction.
	UpdateDue(ctx context.Context, now int64, limit int, fn func(tx Tx, due []Deadline) error) (int, error)
}

// DeadlineBatcher is an optional DeadlineClaimer capability: the store says
// how the Scheduler splits due deadlines into claiming transactions, since
// the best split depends on how the store commits. A claimer without it
// gets claimParallel transactions at once of claimBatch deadlines each
// (sized for PostgreSQL; see scheduler.go).
type DeadlineBatcher interface {
	// DeadlineBatching says how many claimers the Scheduler runs at once
	// (each one UpdateDue at a time, or two when pipelined), the limit it
	// passes each UpdateDue, and whether they pipeline.
	DeadlineBatching() ClaimBatching
}

// ClaimBatching is how the Scheduler splits due deadlines into claims
// (DeadlineBatcher).
type ClaimBatching struct {
	// Parallel claimers run at once, each claim given up to Batch
	// deadlines.
	Parallel, Batch int
	// Pipelined: the store runs every claim's fn on one writer whose
	// later claims see its changes as soon as fn has returned, long before
	// they are durable (SQLite's writer hands each commit to a syncer). A
	// claim then queues the next one once its fn has fired its deadlines,
	// instead of once it is durable, so the writer fires the next batch
	// while the last one is fsynced: at most two claims in flight for each
	// of Parallel, so a request waits behind one claim running and one
	// queued at most.
	Pipelined bool
}

// UserLocker is an optional Tx capability of a store whose transactions
// lock per-user rows (PostgreSQL's event_users, for event ids and the busy
// check): LockUsers takes the rows of every user a use-case will touch in
// one order, before it reads or writes any, so two changes over the same
// users (two users inviting each other at once) wait for each other
// instead of deadlocking.
type UserLocker interface {
	LockUsers(ctx context.Context, userIDs []string) error
}

// CallsLoader is an optional Tx capability of a store for which loading
// several calls at once is cheaper than one by one (PostgreSQL: one round
// trip for all): Calls loads each of callIDs for update, as Call would,
// leaving out those that do not exist.
type CallsLoader interface {
	Calls(ctx context.Context, callIDs []string) (map[string]*Call, error)
}

// Tx is the view of the store inside Update.
type Tx interface {
	// Call loads a call for update, or ErrCallNotFound.
	Call(ctx context.Context, callID string) (*Call, error)
	// Save writes a transition's outcome: the call row (inserted when
	// ch.Created), the users marked dirty, the events (assigning their IDs
	// and After in place, in order) and the webhook messages with one
	// outbox row per subscribed, enabled endpoint (counted in
	// ch.HooksQueued). A store may send the writes with the commit: the
	// IDs, After and HooksQueued are set by the time Update returns, and
	// an error in the writes may be Update's rather than Save's.
	Save(ctx context.Context, ch *Change) error
	// CallerOfflineCalls returns the calls of caller userID that its
	// presence may change (see PresenceMatters): started, no invitee has
	// accepted, and tracked, armed or with an invitee pending; in call
	// order, at most limit calls with Seq > after (paging: one user's
	// presence must not hold the writer for all of its calls at once). The
	// store may return more; callers filter with CallerOfflineApplies.
	CallerOfflineCalls(ctx context.Context, userID string, after int64, limit int) ([]*Call, error)
	// TrackedCallerOfflineCalls is CallerOfflineCalls over every tracked
	// caller, in call order, at most limit calls with Seq > after (paging).
	TrackedCallerOfflineCalls(ctx context.Context, after int64, limit int) ([]*Call, error)
	// BusyUsers returns those of userIDs that are accepted in a started call
	// other than exceptCallID (any device): the busy invitees of an
	// invitation (see busy.go). Asked inside the invitation's transaction, so
	// the answer is the committed truth the invitation is written against.
	BusyUsers(ctx context.Context, userIDs []string, exceptCallID string) ([]string, error)
	// StartedCalls counts the started calls userID is accepted in (the
	// caller of one is), up to limit: the bound on started calls a user
	// may create (Config.MaxStartedCalls).
	StartedCalls(ctx context.Context, userID string, limit int) (int, error)
	IdempotencyTx
}

// IdempotencyTx keeps Idempotency-Key records inside a write transaction, so
// a record commits with the change it guards (see IdempotentRun). Tx has it,
// and so does every other store transaction a key may guard.
type IdempotencyTx interface {
	// IdempotencyRecord returns the record under (scope, key) unless it
	// expired at or before now; nil when there is none.
	IdempotencyRecord(ctx context.Context, scope, key string, now int64) (*IdempotencyRecord, error)
	// PutIdempotencyRecord stores rec, replacing an expired record under
	// its key (the caller has checked with IdempotencyRecord).
	PutIdempotencyRecord(ctx context.Context, rec IdempotencyRecord) error
}

// DeadlineKind says which timer a deadline is.
type DeadlineKind string

const (
	DeadlineTimeout       DeadlineKind = "timeout"
	DeadlineNotReceived   DeadlineKind = "notReceived"
	DeadlineCallerOffline DeadlineKind = "callerOffline"
)

// Deadline is one durable timer: a column of a call or call user row.
type Deadline struct {
	CallID string
	UserID string // empty for DeadlineCallerOffline
	Kind   DeadlineKind
	At     int64 // Unix ms
}

// Notifier is told, after each commit, what was committed, so delivery can
// wake up. It must not block: delivery reads the log, so a lost notification
// only delays, never loses, an event.
type Notifier interface {
	Committed(events []Event, hooks int)
}

// Presence answers whether a user has a live event stream.
type Presence interface {
	Online(userID string) bool
}

// CheckedPresence is an optional Presence capability for a presence that
// may not know (a cluster's presence table unreachable): each use then
// picks the answer that is safe for it (see Service.online).
type CheckedPresence interface {
	Presence
	CheckOnline(ctx context.Context, userID string) (bool, error)
}

// Clock is injected so tests drive deadlines without sleeping.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f in its own goroutine after d; Stop cancels it.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable pending call to a func, like *time.Timer.
type Timer interface {
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// TimerAt sets f to run once clock reaches at (Unix ms; at once when it
// has). AfterFunc takes a duration, so a clock that moves between reading
// it and setting the timer (a test's fake clock jumping ahead) would make
// the timer fire late or never: then it is set again from the new time. A
// stale timer that fires before it is stopped runs f once more, which f
// must tolerate.
func TimerAt(clock Clock, at int64, f func()) Timer {
	for {
		before := clock.Now()
		t := clock.AfterFunc(time.Duration(max(at-before.UnixMilli(), 0))*time.Millisecond, f)
		if clock.Now().Sub(before) <= time.Millisecond {
			return t
		}
		t.Stop()
	}
}

type nopNotifier struct{}

func (nopNotifier) Committed([]Event, int) {}

type nobodyOnline struct{}

func (nobodyOnline) Online(string) bool { return false }
