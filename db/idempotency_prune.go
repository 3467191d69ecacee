package db

import (
	"context"
	"log/slog"
	"time"
)

// IdempotencyPruner deletes expired Idempotency-Key records in the
// background, so the table holds about one TTL's worth of keys. Expired
// records are already ignored and replaced by the lookups; pruning only
// bounds the storage. Each round deletes in batches (PruneIdempotency), so
// it never holds the writer for long.
type IdempotencyPruner struct {
	Store interface {
		PruneIdempotency(ctx context.Context, before int64) (int64, error)
	}
	Every time.Duration    // between rounds (default: an hour)
	Now   func() time.Time // the clock the records' times come from (default: time.Now)
	Log   *slog.Logger     // default: discarded
}

// Run prunes once at once, then every Every, until ctx is done; it returns
// nil then. A failed round is logged and retried at the next one.
func (p *IdempotencyPruner) Run(ctx context.Context) error {
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
		n, err := p.Store.PruneIdempotency(ctx, now().UnixMilli())
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("pruning idempotency keys", "err", err)
		case n > 0:
			log.Debug("pruned idempotency keys", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
