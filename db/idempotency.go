package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Idempotency-Key records for the HTTP layer (handlers.IdempotencyStore).
// All times are Unix milliseconds; status 0 marks a request still in flight.

// Reserve claims (scope, key) for a request with fingerprint until
// expiresAt, unless an unexpired record exists; an expired one is replaced.
// found=false means the key was claimed; found=true returns the record.
// Read and claim happen in one write transaction, so two concurrent first
// requests cannot both claim the key.
func (s *Store) Reserve(ctx context.Context, scope, key, fingerprint string, now, expiresAt int64) (found bool, storedFingerprint string, status int, contentType string, body []byte, err error) {
	err = s.write(ctx, func(tx *sqlx.Tx) error {
		var expires int64
		row := tx.QueryRowContext(ctx, `SELECT fingerprint, status, content_type, body, expires_at
			FROM idempotency_keys WHERE scope = ? AND key = ?`, scope, key)
		switch err := row.Scan(&storedFingerprint, &status, &contentType, &body, &expires); {
		case err == nil && expires > now:
			found = true
			return nil
		case err == nil, errors.Is(err, sql.ErrNoRows):
		default:
			return err
		}
		found, storedFingerprint, status, contentType, body = false, "", 0, "", nil
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO idempotency_keys
			(scope, key, fingerprint, status, content_type, body, created_at, expires_at)
			VALUES (?, ?, ?, 0, '', NULL, ?, ?)`, scope, key, fingerprint, now, expiresAt)
		return err
	})
	if err != nil {
		return false, "", 0, "", nil, fmt.Errorf("db: reserve idempotency key: %w", err)
	}
	return found, storedFingerprint, status, contentType, body, nil
}

// Complete stores the response of an in-flight record, kept until expiresAt.
// A record no longer in flight (released, or replaced after its lease ran
// out) is left alone.
func (s *Store) Complete(ctx context.Context, scope, key string, status int, contentType string, body []byte, expiresAt int64) error {
	if body == nil {
		body = []byte{}
	}
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE idempotency_keys
			SET status = ?, content_type = ?, body = ?, expires_at = ?
			WHERE scope = ? AND key = ? AND status = 0`, status, contentType, body, expiresAt, scope, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: complete idempotency key: %w", err)
	}
	return nil
}

// Release forgets an in-flight record, so the key may be used again.
func (s *Store) Release(ctx context.Context, scope, key string) error {
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys
			WHERE scope = ? AND key = ? AND status = 0`, scope, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("db: release idempotency key: %w", err)
	}
	return nil
}

// PruneIdempotency deletes the records expired at before, in batches through
// the writer (see pruneBatch), and returns how many it deleted.
func (s *Store) PruneIdempotency(ctx context.Context, before int64) (int64, error) {
	var total int64
	for {
		var n int64
		err := s.write(ctx, func(tx *sqlx.Tx) error {
			// The expires_at index makes the inner select a range scan.
			res, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE rowid IN (
				SELECT rowid FROM idempotency_keys WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("db: prune idempotency keys: %w", err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}
