package sqlite

import (
	"context"
	"fmt"

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
// callsig_calls gauge, on a read connection.
func (s *Store) CallCounts(ctx context.Context) (started, ended int64, err error) {
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &started, sqlCountStarted); err != nil {
			return err
		}
		return tx.GetContext(ctx, &ended, sqlCountEnded)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count calls: %w", err)
	}
	return started, ended, nil
}
