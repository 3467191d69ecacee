package calls

import (
	"log/slog"
	"time"
)

// Limits and durations of the contract that a deployment may configure.
type Config struct {
	MaxCallUsers int // users ever in one call, caller included (default 10)
	// MaxStartedCalls bounds the started calls a user may be accepted in
	// and still create a call (0: no bound). An advanced call ends only
	// by end or when nobody is left accepted or pending, and its caller
	// is accepted: a caller with no stream (untracked) whose invitees all
	// timed out holds it started for good, past every retention, so one
	// user creating them in a loop grew the calls without end. Pending
	// general calls count too: each is rewritten when its caller's
	// presence changes (see Service.inviteChecks).
	MaxStartedCalls  int
	NotReceivedAfter time.Duration // enableNotReceivedCheck delay (default 5s)
	HeartbeatTimeout time.Duration // caller-offline grace (default 30s)
	// DeadlinePoll, when set, is the longest the scheduler waits before
	// reading the earliest deadline again (cluster mode: a node that dies
	// may leave a deadline earlier than any this node armed). 0: the
	// scheduler's own timer only (one node knows every deadline).
	DeadlinePoll time.Duration
	// SharedPresence says presence outlives this process (a cluster's
	// presence is in the shared database, and other nodes served while this
	// one was down): a start then arms the caller-offline grace only of
	// tracked calls that have none armed, and leaves an armed grace where it
	// is. Without it (one node) a start re-arms every tracked call from
	// now, because no stream could be open while the process was down.
	SharedPresence bool
}

// Defaults of the contract.
const (
	DefaultTimeout      = 90
	MaxTimeout          = 600
	MaxInvitees         = 9
	MaxExtendedData     = 2048
	DefaultMaxCallUsers = 10
	DefaultListCount    = 20
	MaxListCount        = 100
)

// Service runs the call use-cases: each method is one transaction that loads
// the call, applies a pure transition and saves the outcome with its events.
type Service struct {
	store    Store
	clock    Clock
	notifier Notifier
	presence Presence
	cfg      Config
	newID    func() string
	log      *slog.Logger
	sched    *Scheduler
}

// Options wires a Service; zero fields get working defaults.
type Options struct {
	Store    Store
	Clock    Clock
	Notifier Notifier
	Presence Presence
	Config   Config
	NewID    func() string // callID generator (default: NewCallID)
	Logger   *slog.Logger
}

// NewService returns a Service. Run runs its deadline scheduler.
func NewService(o Options) *Service {
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	if o.Notifier == nil {
		o.Notifier = nopNotifier{}
	}
	if o.Presence == nil {
		o.Presence = nobodyOnline{}
	}
	if o.Config.MaxCallUsers <= 0 {
		o.Config.MaxCallUsers = DefaultMaxCallUsers
	}
	if o.Config.NotReceivedAfter <= 0 {
		o.Config.NotReceivedAfter = 5 * time.Second
	}
	if o.Config.HeartbeatTimeout <= 0 {
		o.Config.HeartbeatTimeout = 30 * time.Second
	}
	if o.NewID == nil {
		o.NewID = NewCallID
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{store: o.Store, clock: o.Clock, notifier: o.Notifier, presence: o.Presence, cfg: o.Config, newID: o.NewID, log: o.Logger}
	s.sched = newScheduler(s)
	return s
}
