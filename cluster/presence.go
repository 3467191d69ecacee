package cluster

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
)

// PresenceStore is the shared presence table set: node leases and one row
// per (node, user) holding a stream. db/postgres.Presence implements it;
// times are the database's, so the nodes' clocks need not agree.
type PresenceStore interface {
	// RenewLease extends node's lease; inserted is true when the node had
	// no row (its first renewal, or it was swept as dead meanwhile).
	RenewLease(ctx context.Context, node string, lease time.Duration) (inserted bool, err error)
	AddPresence(ctx context.Context, node, user string) error
	AddPresences(ctx context.Context, node string, users []string) error
	RemovePresence(ctx context.Context, node, user string) error
	// Online: a row of user on a live node other than except ("": any).
	Online(ctx context.Context, user, except string) (bool, error)
	// SweepDead removes the nodes whose lease expired (never self) with
	// their rows, and returns the users left with no row on a live node.
	SweepDead(ctx context.Context, self string) (nodes int, offline []string, err error)
	// RemoveNode deletes node's row and any rows of its left.
	RemoveNode(ctx context.Context, node string) error
	// ClearNode deletes node's rows (keeping its lease), and returns the
	// users left with no row on a live node.
	ClearNode(ctx context.Context, node string) (offline []string, err error)
}

// Service is what presence changes are reported to: calls.Service, as the
// SSE hub's sse.Service (the hub reports deliveries through it too).
type Service interface {
	MarkDelivered(ctx context.Context, callID, userID string, invitedAt int64) error
	UserOnline(ctx context.Context, userID string) error
	UserOffline(ctx context.Context, userID string, since time.Time) error
}

// PresenceOptions configures NewPresence.
type PresenceOptions struct {
	Store   PresenceStore // required
	Service Service       // required; called only once Run runs
	Node    string        // this node's id (required)
	// Lease is how long this node's rows count after its last renewal
	// (renewed every Lease/3; the dead nodes are swept as often).
	Lease  time.Duration
	Logger *slog.Logger
	// Clock tells when a swept user went offline (nil: the system clock);
	// the service's, so that its grace periods run from then.
	Clock      calls.Clock
	Registerer prometheus.Registerer // nil: metrics kept, not exported
	// CheckTimeout bounds one "online anywhere" query (default 250 ms): it
	// is asked inside a write transaction.
	CheckTimeout time.Duration
}

// Presence is cluster-wide presence: a user is online while any live node
// holds a stream of theirs. It stands between the local SSE hub and
// calls.Service on both sides: as calls.Presence it answers from the local
// hub first (no query) and then from the shared table; as the hub's
// sse.Service it writes this node's (node, user) rows and tells the
// service a user went offline only when no other live node holds one.
type Presence struct {
	o     PresenceOptions
	log   *slog.Logger
	local calls.Presence // the hub; set by SetLocal before anything runs

	mu    sync.Mutex
	users map[string]struct{} // users this node reported online: its rows
	// leftover are the users Join found offline once it had deleted the
	// rows of an earlier process under this node id; Run reports them.
	leftover []string

	// rewriteRows and reportAgain are what is left of rewriting this
	// node's presence after it was swept as dead (see renew): its rows to
	// write again, and the users to report online again. They outlive a
	// failed attempt, as the next renewal finds the lease row there and
	// would not tell that anything is missing. Only the renewals touch
	// rewriteRows. offlineAgain are the users whose offline report failed
	// after their rows were removed (a sweep, Join's leftovers): nothing
	// else would report them. Only the work loop of Run touches
	// reportAgain and offlineAgain.
	rewriteRows  bool
	reportAgain  map[string]struct{}
	offlineAgain map[string]time.Time // the user's first failed report's since
	// lapsed tells the work loop that a renewal wrote this node's rows
	// again after it was swept: its users are to be reported online.
	lapsed chan struct{}

	abandoned atomic.Bool

	gauge         prometheus.GaugeFunc
	renewalFailed prometheus.Counter
	swept         prometheus.Counter
	unknown       prometheus.Counter
}

var (
	_ calls.CheckedPresence = (*Presence)(nil)
	_ Service               = (*Presence)(nil)
)

// NewPresence returns the cluster presence of node o.Node. Join writes its
// first lease; Run keeps it and sweeps the dead nodes.
func NewPresence(o PresenceOptions) (*Presence, error) {
	if o.Store == nil || o.Service == nil || o.Node == "" || o.Lease <= 0 {
		return nil, errors.New("cluster presence: Store, Service, Node and Lease are required")
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = calls.SystemClock{}
	}
	p := &Presence{o: o, log: o.Logger, users: map[string]struct{}{}, lapsed: make(chan struct{}, 1)}
	p.gauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callsig_presence_users", Help: "Users with a stream on this node (its rows in the cluster presence table).",
	}, func() float64 { return float64(p.LocalUsers()) })
	p.renewalFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_presence_lease_renewals_failed_total", Help: "Renewals of this node's presence lease that failed.",
	})
	p.swept = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_presence_nodes_swept_total", Help: "Dead nodes (lease expired) whose presence this node removed.",
	})
	p.unknown = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_presence_checks_failed_total", Help: "Cluster presence checks that failed (answered as safest for the asker).",
	})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{p.gauge, p.renewalFailed, p.swept, p.unknown} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// SetLocal gives the local hub (its Online is the fast path). Call it
// before anything asks.
func (p *Presence) SetLocal(local calls.Presence) { p.local = local }

// Join writes this node's first lease, so its rows count from the first
// stream on. A node restarted under the same id (CALLSIG_NODE_ID) after
// its process was killed finds that process's rows still there, and the
// lease it renews would keep them counting for ever: their streams died
// with the process, and no sweep removes the rows of a live node. So Join
// deletes them first (nothing on this node holds a stream yet), and Run
// reports offline those users no live node holds, as a sweep of a dead
// node would (see reportOffline).
func (p *Presence) Join(ctx context.Context) error {
	offline, err := p.o.Store.ClearNode(ctx, p.o.Node)
	if err != nil {
		return err
	}
	if len(offline) > 0 {
		p.log.Warn("removed the presence of an earlier process under this node id; reporting its users offline", "users", len(offline))
	}
	p.mu.Lock()
	p.leftover = append(p.leftover, offline...)
	p.mu.Unlock()
	_, err = p.o.Store.RenewLease(ctx, p.o.Node, p.o.Lease)
	return err
}

// LocalUsers is how many users have a stream on this node.
func (p *Presence) LocalUsers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.users)
}

// Online reports whether userID has a stream on any live node; unknown
// (the table unreachable) is offline. calls.Service asks CheckOnline.
func (p *Presence) Online(userID string) bool {
	on, err := p.CheckOnline(context.Background(), userID)
	return on && err == nil
}

// CheckOnline answers from the local hub when it holds a stream (no
// query), else from the rows of the other live nodes (this node's own are
// the hub's, which may be a report behind it).
func (p *Presence) CheckOnline(ctx context.Context, userID string) (bool, error) {
	if p.local != nil && p.local.Online(userID) {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.o.CheckTimeout)
	defer cancel()
	on, err := p.o.Store.Online(ctx, userID, p.o.Node)
	if err != nil {
		p.unknown.Inc()
		return false, err
	}
	return on, nil
}

// MarkDelivered passes a delivery report on.
func (p *Presence) MarkDelivered(ctx context.Context, callID, userID string, invitedAt int64) error {
	return p.o.Service.MarkDelivered(ctx, callID, userID, invitedAt)
}

// UserOnline records the user's first stream on this node: its row first,
// so other nodes see it before the service's transaction runs, then the
// service (which clears the caller-offline grace of the user's calls).
func (p *Presence) UserOnline(ctx context.Context, userID string) error {
	if p.abandoned.Load() {
		return nil
	}
	p.mu.Lock()
	p.users[userID] = struct{}{}
	p.mu.Unlock()
	if err := p.o.Store.AddPresence(ctx, p.o.Node, userID); err != nil {
		return err
	}
	return p.o.Service.UserOnline(ctx, userID)
}

// Announce records a stream of userID on this node as it opens, before
// its headers are sent (sse.Options.Announce), so every node counts the
// user online from the moment the client can act. Idempotent: the
// UserOnline report that follows writes the same row.
func (p *Presence) Announce(ctx context.Context, userID string) error {
	if p.abandoned.Load() {
		return nil
	}
	return p.o.Store.AddPresence(ctx, p.o.Node, userID)
}

// UserOffline records that the user's last stream on this node closed at
// since.
func (p *Presence) UserOffline(ctx context.Context, userID string, since time.Time) error {
	if p.abandoned.Load() {
		return nil
	}
	p.mu.Lock()
	delete(p.users, userID)
	p.mu.Unlock()
	if err := p.o.Store.RemovePresence(ctx, p.o.Node, userID); err != nil {
		return err
	}
	// The user may have opened a stream here again while this report was
	// under way: the hub holds it from the start (it subscribes a stream
	// before announcing it), and the row its announcement wrote may be
	// the one just removed. Without it every other node counted the user
	// offline, and the service was told so, until the hub's next report
	// (online, due since the stream opened) wrote it again.
	if p.local != nil && p.local.Online(userID) {
		return p.o.Store.AddPresence(ctx, p.o.Node, userID)
	}
	return p.offlineUnlessElsewhere(ctx, userID, since)
}

// offlineUnlessElsewhere reports userID offline to the service unless a
// live node holds a stream of theirs. Two nodes may race: this one finds
// no row and reports offline while another writes its row and reports
// online; if the online report committed first, the grace armed by the
// offline one would cancel a connected caller's calls. So after reporting
// offline the rows are read again, and a row found then (written before
// that online report began) is answered with an online report, which
// clears the grace.
//
// This node's own rows count too. Whoever calls this has deleted the row
// it reports about, but the user may have opened a stream here since:
// its row (written as it opens, before the hub's online report) then
// stands for it. That matters most to the reports of a sweep or of Join,
// which the hub does not order with its own: the clients of a killed node
// reconnect just as its replacement reports their users.
func (p *Presence) offlineUnlessElsewhere(ctx context.Context, userID string, since time.Time) error {
	if p.holds(userID) {
		return nil // a stream here: online, whatever the rows say now
	}
	on, err := p.o.Store.Online(ctx, userID, "")
	if err != nil || on {
		return err
	}
	if err := p.o.Service.UserOffline(ctx, userID, since); err != nil {
		return err
	}
	if on, err = p.o.Store.Online(ctx, userID, ""); err != nil || !on {
		return err
	}
	return p.o.Service.UserOnline(ctx, userID)
}

// Run renews this node's lease every Lease/3 until ctx is done, then
// leaves the cluster (see leave), and returns nil. Meanwhile its work loop
// (see work) reports offline the users Join found left by an earlier
// process under this node id, sweeps the dead nodes and does the reports
// that follows. The two are apart: reporting a dead node's tens of
// thousands of users offline, one transaction each, took longer than a
// lease, and the renewals waited behind it; this node's own lease lapsed,
// another node swept it and reported its connected users offline.
func (p *Presence) Run(ctx context.Context) error {
	every := max(p.o.Lease/3, 10*time.Millisecond)
	worked := make(chan struct{})
	go func() {
		defer close(worked)
		p.work(ctx, every)
	}()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-worked
			p.leave(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
		}
		if p.abandoned.Load() {
			continue
		}
		p.renew(ctx)
	}
}

// work reports Join's leftovers offline, then every period until ctx is
// done: rewrites this node's presence if a renewal found it swept, sweeps
// the dead nodes and reports their users offline, and retries the offline
// reports that failed.
func (p *Presence) work(ctx context.Context, every time.Duration) {
	p.mu.Lock()
	leftover := p.leftover
	p.leftover = nil
	p.mu.Unlock()
	p.reportOffline(ctx, since(leftover, p.o.Clock.Now()))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.lapsed:
			select { // back for round, which takes it
			case p.lapsed <- struct{}{}:
			default: // a renewal put another
			}
		case <-t.C:
		}
		if !p.abandoned.Load() {
			p.round(ctx)
		}
	}
}

// round is one round of the work loop.
func (p *Presence) round(ctx context.Context) {
	p.reportOnlineAgain(ctx)
	p.sweep(ctx)
	if len(p.offlineAgain) > 0 {
		again := p.offlineAgain
		p.offlineAgain = nil
		p.reportOffline(ctx, again)
	}
}

// renew extends the lease. A node that finds its row gone was swept as
// dead (a pause longer than the lease, or the database unreachable from
// here): its users were reported offline, so the work loop writes their
// rows again and reports them online, which clears the grace the sweep
// armed. What fails of that (the database still flapping) is retried on
// every round until done (see rewrite).
func (p *Presence) renew(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, p.o.Lease/3)
	defer cancel()
	inserted, err := p.o.Store.RenewLease(rctx, p.o.Node, p.o.Lease)
	if err != nil {
		if ctx.Err() == nil {
			p.renewalFailed.Inc()
			p.log.Error("renew presence lease", "err", err)
		}
		return
	}
	if inserted {
		p.log.Warn("presence lease had lapsed and this node was swept as dead; writing its users' presence again", "users", p.LocalUsers())
		p.rewriteRows = true
	}
	// Bounded as the renewal is: the rows' write may queue behind other
	// presence writes, and the next renewal must not wait for it (it
	// retries the write).
	wctx, wcancel := context.WithTimeout(ctx, p.o.Lease/3)
	defer wcancel()
	p.rewrite(wctx)
}

// rewrite writes this node's rows again after it was swept as dead, on
// the renewal that found it so (one statement): other nodes see its users
// online from then on, whatever the work loop is busy with (a long
// sweep), and their grace, armed by the sweep, is not fired (see
// calls.Service's expire). Then it tells the work loop to report them
// online, which clears that grace (reportOnlineAgain): rows first, as
// UserOnline does. A failed write is retried at the next renewal. The
// rows are inserted ON CONFLICT DO NOTHING, so a retry may repeat the
// rows of users who wrote theirs since. They are those of the users held
// now, not when the row was found gone: a user whose last stream closed
// meanwhile had their row deleted and was reported offline then, and is
// neither written nor reported online again.
func (p *Presence) rewrite(ctx context.Context) {
	if !p.rewriteRows {
		return
	}
	if users := p.localUsers(); len(users) > 0 {
		if err := p.o.Store.AddPresences(ctx, p.o.Node, users); err != nil {
			if !errors.Is(ctx.Err(), context.Canceled) { // not stopping: failed, or out of time
				p.log.Error("write presence again after a lapsed lease (retried at the next renewal)", "err", err)
			}
			return
		}
	}
	p.rewriteRows = false
	select {
	case p.lapsed <- struct{}{}:
	default: // already told
	}
}

// reportOnlineAgain makes the online reports due after this node's rows
// were written again (rewrite), and those that failed before: an online
// report clears a grace or finds none, so repeating one is harmless.
func (p *Presence) reportOnlineAgain(ctx context.Context) {
	select {
	case <-p.lapsed:
		users := p.localUsers()
		p.reportAgain = make(map[string]struct{}, len(users))
		for _, u := range users {
			p.reportAgain[u] = struct{}{}
		}
	default:
	}
	for u := range p.reportAgain {
		if ctx.Err() != nil {
			return
		}
		if !p.holds(u) {
			delete(p.reportAgain, u)
			continue
		}
		if err := p.o.Service.UserOnline(ctx, u); err != nil {
			if ctx.Err() == nil {
				p.log.Error("report user online again after a lapsed lease (retried at the next round)", "user", u, "err", err)
			}
			continue
		}
		delete(p.reportAgain, u)
	}
}

// localUsers lists the users this node holds a stream of.
func (p *Presence) localUsers() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	users := make([]string, 0, len(p.users))
	for u := range p.users {
		users = append(users, u)
	}
	return users
}

// holds reports whether this node holds a stream of user.
func (p *Presence) holds(user string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.users[user]
	return ok
}

// sweep removes dead nodes and reports their users who are now offline
// everywhere, so those users' calls follow the caller-offline rule as if
// their streams had closed now.
func (p *Presence) sweep(ctx context.Context) {
	for ctx.Err() == nil {
		n, offline, err := p.o.Store.SweepDead(ctx, p.o.Node)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("sweep dead nodes", "err", err)
			}
			return
		}
		if n == 0 {
			return
		}
		p.swept.Add(float64(n))
		p.log.Info("swept dead nodes", "nodes", n, "users_offline", len(offline))
		p.reportOffline(ctx, since(offline, p.o.Clock.Now()))
		p.reportOnlineAgain(ctx) // this node swept meanwhile: not after the whole sweep
	}
}

// reportOffline reports offline the users whose rows were removed because
// the process holding them died (a sweep, or Join after a restart under
// the same id), unless a live node holds them meanwhile. Those whose
// report fails are tried again at the work loop's next round: their rows
// are gone, and nothing else would report them.
func (p *Presence) reportOffline(ctx context.Context, offline map[string]time.Time) {
	failed := p.each(ctx, slices.Collect(maps.Keys(offline)), func(ctx context.Context, u string) error {
		return p.offlineUnlessElsewhere(ctx, u, offline[u])
	})
	if len(failed) > 0 && ctx.Err() == nil {
		if p.offlineAgain == nil {
			p.offlineAgain = make(map[string]time.Time, len(failed))
		}
		for _, u := range failed {
			// The first report's time: the grace runs from when the user
			// was found gone, not from when the store came back.
			p.offlineAgain[u] = offline[u]
		}
		p.log.Warn("report presence: offline reports failed, tried again at the next round", "users", len(failed))
	}
}

// since maps each of users to at.
func since(users []string, at time.Time) map[string]time.Time {
	m := make(map[string]time.Time, len(users))
	for _, u := range users {
		m[u] = at
	}
	return m
}

// reportWorkers bounds the concurrent reports of a sweep or a leave.
const reportWorkers = 8

// each runs f for every user, reportWorkers at a time, retrying a failure
// twice, and returns the users whose f still failed (logged), or that ctx
// ended before.
func (p *Presence) each(ctx context.Context, users []string, f func(context.Context, string) error) (failed []string) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	sem := make(chan struct{}, reportWorkers)
	for _, u := range users {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			for range 3 {
				if err = f(ctx, u); err == nil || ctx.Err() != nil {
					break
				}
			}
			if err != nil {
				p.log.Error("report presence", "user", u, "err", err)
				mu.Lock()
				failed = append(failed, u)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// leaveTimeout bounds a graceful leave.
const leaveTimeout = 5 * time.Second

// leave runs on a graceful stop. The hub ended every stream of this node
// (their clients reconnect to other nodes) and reports no presence while
// stopping, so the node removes its own rows now and reports offline the
// users no other node holds: their grace starts when their streams closed,
// as on one node, and a client that reconnects elsewhere clears it with
// that node's online report. Waiting for the lease to lapse instead would
// keep them online for a lease after they left and start their grace that
// much late. Whatever the time bound leaves undone (thousands of users)
// stays for the lease to lapse: the node's row is then kept, so another
// node sweeps the remaining rows and reports those users.
func (p *Presence) leave(ctx context.Context) {
	if p.abandoned.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, min(leaveTimeout, p.o.Lease))
	defer cancel()
	if len(p.offlineAgain) > 0 { // the work loop has ended: one last try
		again := p.offlineAgain
		if failed := p.each(ctx, slices.Collect(maps.Keys(again)), func(ctx context.Context, u string) error {
			return p.offlineUnlessElsewhere(ctx, u, again[u])
		}); len(failed) > 0 {
			p.log.Error("leave the cluster: offline reports of swept users left unmade", "users", len(failed))
		}
	}
	users := p.localUsers()
	var left atomic.Int64
	p.each(ctx, users, func(ctx context.Context, u string) error {
		if err := p.o.Store.RemovePresence(ctx, p.o.Node, u); err != nil {
			return err
		}
		p.mu.Lock()
		delete(p.users, u)
		p.mu.Unlock()
		left.Add(1)
		return p.offlineUnlessElsewhere(ctx, u, p.o.Clock.Now())
	})
	if int(left.Load()) < len(users) {
		p.log.Warn("left the cluster partly: the lease will lapse and another node will sweep the rest", "users", len(users), "removed", left.Load())
		return
	}
	if err := p.o.Store.RemoveNode(ctx, p.o.Node); err != nil {
		p.log.Warn("leave the cluster: remove node (its lease will lapse)", "err", err)
	}
}

// Abandon makes this node behave as if it had died: it stops renewing its
// lease, writes and reports no presence any more, and will not clean up
// when stopped, so the other nodes find its lease lapsed and sweep it.
// For tests of a node's death; a real node never calls it.
func (p *Presence) Abandon() { p.abandoned.Store(true) }
