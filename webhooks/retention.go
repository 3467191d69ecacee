package webhooks

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/internal/prom"
)

// Defaults of the Retention.
const (
	// DefaultRetention is how long finished deliveries stay in the delivery
	// log (GET /webhooks/{id}/deliveries): a week to look into what an
	// endpoint got, after which the outbox forgets them.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultPruneInterval is how often the outbox is pruned.
	DefaultPruneInterval = 10 * time.Minute
	// DefaultPruneBatch bounds each pruning write, so a large backlog never
	// holds the single writer (and the requests queued behind it) for long.
	DefaultPruneBatch = 500
	// DefaultMaxPending is how many pending deliveries an endpoint may
	// have (see Retention.dropBacklog): hours of a busy app's events, so a
	// receiver's restart, deploy or short outage loses nothing, and at an
	// endpoint's share of attempts in flight a receiver back up drains it
	// within minutes; yet a dead receiver's backlog is tens of MB of the
	// outbox (with its messages' bodies, a few hundred MB) at most.
	DefaultMaxPending = 100_000
	// minExpireAfter is the least time a pending delivery is overdue
	// before it is failed as expired: past the retry schedule's ~28 hours.
	minExpireAfter = 48 * time.Hour
	// expireLeaseMargin is how long after its lease ended a delivery is
	// left alone by the expiry. An attempt outlives its lease only when
	// its node's clock jumped or it stalled; the node's next claim then
	// renews the lease, and the attempt records its outcome with it. Failed
	// as expired meanwhile, the delivery would have dropped the lease, and
	// the outcome would be ignored: listed as expired, a delivery its
	// endpoint took. An hour is far past an attempt (15 s) and its record
	// (10 s), and past a clock jumped or skewed by less than that.
	expireLeaseMargin = time.Hour
)

// ExpiredReason is the last error of a delivery failed for its age.
const ExpiredReason = "expired: still pending when its time ran out"

// RetentionOptions configures NewRetention; zero fields get defaults.
type RetentionOptions struct {
	Clock    calls.Clock           // default: the system clock
	Logger   *slog.Logger          // default: discard
	Registry prometheus.Registerer // nil: no metrics exported
	Period   time.Duration         // default DefaultRetention
	Interval time.Duration         // default DefaultPruneInterval (at most Period)
	Batch    int                   // default DefaultPruneBatch
	// MaxPending bounds each endpoint's pending deliveries; default
	// DefaultMaxPending.
	MaxPending int
}

// Retention prunes the outbox: finished (delivered or failed) deliveries
// created more than Period ago, each message once no delivery refers to
// it, and each endpoint deleted through the API once no delivery does. Pending deliveries are never pruned; but one still pending and
// overdue by half the period (at least 48 h: the retry schedule's own
// delays end after about 32) is failed as expired first, and then kept
// listed until the period ends. Without that, an endpoint that never takes
// its deliveries (down with its breaker open, which counts no attempt, or
// answering too slowly for what it is sent) would have them pile up for
// as long as it stays registered. Overdue, not old: one that a receiver's
// Retry-After put off, or an admin's retry made due again, has its time
// still to come. Time alone bounds no backlog, though: at a busy app's
// rate a dead receiver's would reach millions of deliveries before any is
// overdue, each owed to the receiver once back. So each endpoint keeps
// MaxPending pending deliveries at most: the oldest beyond them are
// failed as dropped at every pass (see dropBacklog).
type Retention struct {
	store       Store
	clock       calls.Clock
	log         *slog.Logger
	period      time.Duration
	expireAfter time.Duration
	interval    time.Duration
	batch       int
	maxPending  int
	pruned      prometheus.Counter
	expired     prometheus.Counter
	dropped     prometheus.Counter
}

// NewRetention returns the pruner of store's outbox; Run runs it.
func NewRetention(store Store, o RetentionOptions) (*Retention, error) {
	if o.Clock == nil {
		o.Clock = calls.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Period <= 0 {
		o.Period = DefaultRetention
	}
	if o.Interval <= 0 {
		o.Interval = DefaultPruneInterval
	}
	o.Interval = min(o.Interval, o.Period)
	if o.Batch <= 0 {
		o.Batch = DefaultPruneBatch
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	pruned := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_webhook_deliveries_pruned_total",
		Help: "Finished webhook deliveries deleted after the retention period.",
	})
	expired := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_webhook_deliveries_expired_total",
		Help: "Webhook deliveries failed as expired: still pending and overdue by half the retention period (at least 48 h).",
	})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "callsig_webhook_deliveries_dropped_total",
		Help: "Webhook deliveries failed unsent because their endpoint's backlog passed its limit (the oldest pending beyond it).",
	})
	if o.Registry != nil {
		var err error
		if pruned, err = prom.Register(o.Registry, pruned); err != nil {
			return nil, err
		}
		if expired, err = prom.Register(o.Registry, expired); err != nil {
			return nil, err
		}
		if dropped, err = prom.Register(o.Registry, dropped); err != nil {
			return nil, err
		}
	}
	return &Retention{store: store, clock: o.Clock, log: o.Logger, period: o.Period,
		expireAfter: max(o.Period/2, minExpireAfter),
		interval:    o.Interval, batch: o.Batch, maxPending: o.MaxPending,
		pruned: pruned, expired: expired, dropped: dropped}, nil
}

// Run prunes at once and then every Interval until ctx is done; it
// returns nil then. A failed pruning is logged and tried again next time.
func (r *Retention) Run(ctx context.Context) error {
	tick := make(chan struct{}, 1)
	for {
		if _, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("webhooks: prune outbox", "err", err)
		}
		t := r.clock.AfterFunc(r.interval, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-tick:
		}
	}
}

// Prune fails the pending deliveries past their time and those beyond
// their endpoint's bound, and deletes what is past retention now, one
// bounded batch per write, and returns how many deliveries it deleted.
func (r *Retention) Prune(ctx context.Context) (int, error) {
	if err := r.expire(ctx); err != nil {
		return 0, err
	}
	r.dropBacklog(ctx)
	before := r.clock.Now().Add(-r.period).UnixMilli()
	total := 0
	for {
		n, err := r.store.PruneWebhookDeliveries(ctx, before, r.batch)
		total += n
		r.pruned.Add(float64(n))
		if err != nil {
			return total, err
		}
		if n < r.batch {
			if total > 0 {
				r.log.Info("webhook deliveries pruned", "deleted", total, "created_before", time.UnixMilli(before).UTC().Format(time.RFC3339))
			}
			return total, r.purgeEndpoints(ctx)
		}
	}
}

// purgeAfter is how long a deleted endpoint stays a row at least: far
// past the longest a write that read it as live before its deletion can
// take to commit (twice the statement timeout and a second).
const purgeAfter = time.Hour

// purgeEndpoints deletes the endpoints deleted through the API, over
// purgeAfter ago, whose deliveries are all pruned, one bounded batch per
// write.
func (r *Retention) purgeEndpoints(ctx context.Context) error {
	now := r.clock.Now()
	before := now.Add(-purgeAfter).UnixMilli()
	for {
		n, err := r.store.PurgeDeletedWebhookEndpoints(ctx, now.UnixMilli(), before, r.batch)
		if err != nil || n < r.batch {
			return err
		}
	}
}

// expire fails the pending deliveries overdue since more than expireAfter,
// one bounded batch per write.
func (r *Retention) expire(ctx context.Context) error {
	now := r.clock.Now()
	before := now.Add(-r.expireAfter).UnixMilli()
	total := 0
	for {
		n, err := r.store.ExpireWebhookDeliveries(ctx, before, now.Add(-expireLeaseMargin).UnixMilli(), r.batch)
		total += n
		r.expired.Add(float64(n))
		if err != nil {
			return err
		}
		if n < r.batch {
			if total > 0 {
				r.log.Warn("webhook deliveries expired: still pending when their time ran out", "failed", total,
					"created_before", time.UnixMilli(before).UTC().Format(time.RFC3339))
			}
			return nil
		}
	}
}
