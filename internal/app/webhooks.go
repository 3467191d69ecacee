package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"callsig/calls"
	"callsig/db"
	"callsig/handlers"
	"callsig/webhooks"
)

// webhooksPart is the webhook side: the registry, the outbox dispatcher
// and the outbox's retention.
type webhooksPart struct {
	Notifier calls.Notifier
	// Registry serves the admin /webhooks endpoints.
	Registry handlers.WebhookAdmin
	// Run runs the dispatcher and the retention pruner until ctx is done.
	Run func(ctx context.Context) error
	// Start runs Run in the background, for New's wiring until the
	// background parts run under one errgroup; wait waits for Run to end.
	Start func(ctx context.Context) (wait func(), err error)
}

// The SQLite store is the webhook outbox.
var _ webhooks.Store = (*db.Store)(nil)

func (a *App) newWebhooks(opts Options) (*webhooksPart, error) {
	clock := opts.Clock
	if clock == nil {
		clock = calls.SystemClock{}
	}
	log := a.log.With("component", "webhooks")
	d, err := webhooks.NewDispatcher(a.Store, webhooks.DispatcherOptions{
		Clock:    clock,
		Client:   webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: a.Config.WebhookAllowPrivate}),
		Logger:   log,
		Registry: a.Registry,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook dispatcher: %w", err)
	}
	ret, err := webhooks.NewRetention(a.Store, webhooks.RetentionOptions{
		Clock: clock, Logger: log, Registry: a.Registry, Period: a.Config.WebhookRetention,
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
	run := func(ctx context.Context) error {
		return runAll(ctx, d.Run, ret.Run)
	}
	start := func(ctx context.Context) (func(), error) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := run(ctx); err != nil {
				a.log.Error("webhooks stopped", "err", err)
			}
		}()
		return func() { <-done }, nil
	}
	return &webhooksPart{Notifier: d, Registry: reg, Run: run, Start: start}, nil
}

// runAll runs each Run until ctx is done and returns their errors.
func runAll(ctx context.Context, runs ...func(context.Context) error) error {
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, run := range runs {
		wg.Go(func() { errs[i] = run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
