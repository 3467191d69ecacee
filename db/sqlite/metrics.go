package sqlite

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// CallCounts returns how many calls are started and ended, for the
// callsig_calls gauge, each counted along its partial index
// (calls_started_by_caller, calls_ended), never the table.
func (s *Store) CallCounts(ctx context.Context) (started, ended int64, err error) {
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &started, `SELECT count(*) FROM calls INDEXED BY calls_started_by_caller WHERE state = 'started'`); err != nil {
			return err
		}
		// Along migration 0006's partial index of ended calls: those kept
		// (the retention bounds them), on a read connection. The sequence
		// of calls ever made, read before, counted the pruned ones too.
		return tx.GetContext(ctx, &ended, `SELECT count(*) FROM calls INDEXED BY calls_ended WHERE state = 'ended'`)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count calls: %w", err)
	}
	return started, ended, nil
}
