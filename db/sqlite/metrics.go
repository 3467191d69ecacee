package sqlite

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// CallCounts returns how many calls are started and ended, for the
// callsig_calls gauge. Both counts stay cheap at any size: started calls
// are counted on the partial index calls_started_by_caller, and the total
// comes from the AUTOINCREMENT sequence (ended = total - started).
func (s *Store) CallCounts(ctx context.Context) (started, ended int64, err error) {
	var total int64
	err = s.read(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &started, `SELECT count(*) FROM calls INDEXED BY calls_started_by_caller WHERE state = 'started'`); err != nil {
			return err
		}
		// Calls are never deleted and seq is AUTOINCREMENT, so the sequence
		// is the number of calls ever created, without a table scan.
		return tx.GetContext(ctx, &total, `SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'calls'), 0)`)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("count calls: %w", err)
	}
	return started, total - started, nil
}
