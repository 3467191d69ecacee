package db

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Pruner deletes in the background what a store keeps past its time:
// expired Idempotency-Key records (Store.PruneIdempotency, Age 0: their
// expiry is stored), ended calls past their retention (Store.PruneCalls).
// Each round deletes in batches, so it never holds the writer for long;
// the stores ignore or refuse what is past its time already, so pruning
// only bounds the storage.
type Pruner struct {
	What  string                                                 // for the log: "idempotency keys"
	Prune func(ctx context.Context, before int64) (int64, error) // deletes what is older than before (Unix ms)
	Age   time.Duration                                          // before is now minus Age
	Every time.Duration                                          // between rounds (default: an hour)
	Now   func() time.Time                                       // default: time.Now
	Log   *slog.Logger                                           // default: discarded
}

// Run prunes once at once, then every Every, until ctx is done; it returns
// nil then. A failed round is logged and retried at the next one.
func (p *Pruner) Run(ctx context.Context) error {
	every, now, log := p.Every, p.Now, p.Log
	if every <= 0 {
		every = time.Hour
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := p.Prune(ctx, now().Add(-p.Age).UnixMilli())
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("pruning "+p.What, "err", err)
		case n > 0:
			log.Info("pruned "+p.What, "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// InBatches runs batch, one bounded delete per transaction, until it
// deletes fewer than size rows or ctx ends, and returns how many rows it
// deleted in all: how every store prunes, so that a backlog never holds a
// write transaction (the SQLite writer above all) for long. what names the
// rows in the error.
func InBatches(ctx context.Context, what string, size int, batch func() (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := batch()
		if err != nil {
			return total, fmt.Errorf("db: prune %s: %w", what, err)
		}
		total += n
		if n < int64(size) || ctx.Err() != nil {
			return total, nil
		}
	}
}
