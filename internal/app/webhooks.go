package app

import (
	"context"
	"fmt"
	"time"

	"callsig/calls"
	"callsig/webhooks"
)

// webhookParts is the webhook side: the outbox dispatcher (a notifier and
// a background part), the outbox's retention (a background part) and the
// endpoints registry behind the admin API.
type webhookParts struct {
	dispatcher *webhooks.Dispatcher
	retention  *webhooks.Retention
	registry   *webhooks.Registry
}

func (a *App) newWebhooks(opts Options) (*webhookParts, error) {
	clock := opts.Clock
	if clock == nil {
		clock = calls.SystemClock{}
	}
	log := a.log.With("component", "webhooks")
	client := webhooks.NewClient(webhooks.ClientOptions{
		AllowPrivate: a.Config.WebhookAllowPrivate, IdlePerHost: a.Config.WebhookShare, Idle: a.Config.WebhookWorkers,
	})
	d, err := webhooks.NewDispatcher(a.Store, webhooks.DispatcherOptions{
		Clock:    clock,
		Client:   client,
		Logger:   log,
		Registry: a.Registry,
		Lease:    a.Config.WebhookLease,
		Workers:  a.Config.WebhookWorkers,
		Share:    a.Config.WebhookShare,
		Poll:     webhookPoll(a.Config),
	})
	if err != nil {
		return nil, fmt.Errorf("webhook dispatcher: %w", err)
	}
	ret, err := webhooks.NewRetention(a.Store, webhooks.RetentionOptions{
		Clock: clock, Logger: log, Registry: a.Registry, Period: a.Config.WebhookRetention,
		MaxPending: a.Config.WebhookMaxPending,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook retention: %w", err)
	}
	reg := webhooks.NewRegistry(a.Store, webhooks.RegistryOptions{
		Clock: clock, AllowPrivate: a.Config.WebhookAllowPrivate, Wake: d.Wake,
	})
	// CALLSIG_WEBHOOK_URL and _SECRET: one endpoint without the API, kept in
	// step with the configuration at every start (removed when unset).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Configure(ctx, a.Config.WebhookURL, a.Config.WebhookSecret); err != nil {
		return nil, fmt.Errorf("configured webhook: %w", err)
	}
	return &webhookParts{dispatcher: d, retention: ret, registry: reg}, nil
}

// webhookPoll is how often a dispatcher on PostgreSQL reads when a
// delivery is next due (webhooks.DispatcherOptions.Poll): other nodes'
// released or lapsed attempts wake no one here. One read a node every few
// seconds; a claim only when something is due. On SQLite this process is
// the only one.
func webhookPoll(c Config) time.Duration {
	if IsPostgresDSN(c.DB) {
		return clusterWebhookPoll
	}
	return 0
}

// clusterWebhookPoll: a delivery a stopped node released waits at most this
// long for another node; one a killed node held, its lease and this.
const clusterWebhookPoll = 2 * time.Second
