package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// The counts of the callsig_calls gauge, each along its partial index
// (migrations 0011 and 0006), never the table. The ended calls are those
// kept (the retention bounds them); the sequence of calls ever made, read
// before, counted the pruned ones too.
const (
	sqlCountStarted = `SELECT count(*) FROM calls INDEXED BY calls_started WHERE state = 'started'`
	sqlCountEnded   = `SELECT count(*) FROM calls INDEXED BY calls_ended WHERE state = 'ended'`
)

// CallCounts returns how many calls are started and ended, for the
// callsig_calls gauge, on a read connection. The started calls (the live
// ones, few) are counted at every scrape. The ended ones are nearly every
// row, and counting them walks their whole index: 70-260 ms at 3 million
// calls (docs/benchmarks.md, "A node months in production"), at every
// scrape, growing without bound with CALLSIG_CALL_RETENTION=0. From
// exactCountBelow of them on, they are counted again at most every
// endedCountEvery, and the last count stands meanwhile, as PostgreSQL's
// estimate does.
func (s *Store) CallCounts(ctx context.Context) (started, ended int64, err error) {
	c := &s.endedCount
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := c.n < exactCountBelow || time.Since(c.at) >= endedCountEvery
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &started, sqlCountStarted); err != nil {
			return err
		}
		if !fresh {
			return nil
		}
		return tx.GetContext(ctx, &ended, sqlCountEnded)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count calls: %w", err)
	}
	if fresh {
		c.n, c.at = ended, time.Now()
	}
	return started, c.n, nil
}

// endedCount is the last count of the ended calls, and when it was made.
type endedCount struct {
	mu sync.Mutex
	n  int64
	at time.Time
}

// exactCountBelow is the number of ended calls up to which every scrape
// counts them; endedCountEvery how often they are counted beyond it.
const (
	exactCountBelow = 100_000
	endedCountEvery = time.Minute
)
