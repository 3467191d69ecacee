package app

import (
	"context"
	"fmt"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/handlers"
	"callsig/webhooks"
)

// webhooksPart is the webhook side: the registry, the outbox dispatcher.
// Owned by the webhooks work; nil fields mean "not wired".
type webhooksPart struct {
	Notifier calls.Notifier
	// Registry serves the admin /webhooks endpoints.
	Registry handlers.WebhookAdmin
	// Start runs the dispatcher; the returned func waits for it to stop
	// after ctx is cancelled.
	Start func(ctx context.Context) (wait func(), err error)
}

// The SQLite store is the webhook outbox.
var _ webhooks.Store = (*db.Store)(nil)

func (a *App) newWebhooks(opts Options) (*webhooksPart, error) {
	clock := opts.Clock
	if clock == nil {
		clock = calls.SystemClock{}
	}
	d, err := webhooks.NewDispatcher(a.Store, webhooks.DispatcherOptions{
		Clock:    clock,
		Client:   webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: a.Config.WebhookAllowPrivate}),
		Logger:   a.log,
		Registry: a.Registry,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook dispatcher: %w", err)
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
	return &webhooksPart{Notifier: d, Registry: reg, Start: d.Start}, nil
}
