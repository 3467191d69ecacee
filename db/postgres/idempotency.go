package postgres

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// Idempotency-Key records: rows with a unique (scope, key), written in the
// transaction of the change they guard.

const selectIdempotency = `SELECT fingerprint, status, content_type, body, created_at, expires_at
	FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at > $3`

// upsertIdempotency inserts a record; an existing one is replaced only when
// it has expired, so a live record is never overwritten.
const upsertIdempotency = `INSERT INTO idempotency_keys
	(scope, key, fingerprint, status, content_type, body, created_at, expires_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (scope, key) DO UPDATE SET
		fingerprint = excluded.fingerprint, status = excluded.status,
		content_type = excluded.content_type, body = excluded.body,
		created_at = excluded.created_at, expires_at = excluded.expires_at
	WHERE idempotency_keys.expires_at <= excluded.created_at`

// sqlPutIdempotency is upsertIdempotency for a write transaction's
// pipeline: it fails (callsig_fail) when a live record holds the key, as
// it is sent with the commit, too late for a check in Go.
const sqlPutIdempotency = `WITH put AS (` + upsertIdempotency + ` RETURNING 1)
	SELECT CASE WHEN EXISTS (SELECT 1 FROM put) THEN 1 ELSE ` + sqlFailKeyHeld + ` END`

// lockIdempotency takes a transaction-scoped advisory lock on the key, so
// two requests with one key, on any nodes, run one after the other: the
// second reads the record the first committed and replays it. A hash
// collision only makes two unrelated keys take turns.
const lockIdempotency = `SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 0))`

func getIdempotency(ctx context.Context, q sqlx.QueryerContext, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	rec := &calls.IdempotencyRecord{Scope: scope, Key: key}
	err := q.QueryRowxContext(ctx, selectIdempotency, scope, key, now).Scan(&rec.Fingerprint,
		&rec.Response.Status, &rec.Response.ContentType, &rec.Response.Body, &rec.CreatedAt, &rec.ExpiresAt)
	switch {
	case errNoRows(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("db: read idempotency key: %w", err)
	}
	return rec, nil
}

// lockedIdempotency locks the key in tx, then reads its record.
func lockedIdempotency(ctx context.Context, tx *sqlx.Tx, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	if _, err := tx.ExecContext(ctx, lockIdempotency, scope, key); err != nil {
		return nil, fmt.Errorf("db: lock idempotency key: %w", err)
	}
	return getIdempotency(ctx, tx, scope, key, now)
}

// putIdempotency stores rec unless a live record holds its key; it reports
// whether rec was stored.
func putIdempotency(ctx context.Context, tx *sqlx.Tx, rec calls.IdempotencyRecord) (bool, error) {
	body := rec.Response.Body
	if body == nil {
		body = []byte{}
	}
	res, err := tx.ExecContext(ctx, upsertIdempotency, rec.Scope, rec.Key, rec.Fingerprint,
		rec.Response.Status, rec.Response.ContentType, body, rec.CreatedAt, rec.ExpiresAt)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return false, fmt.Errorf("db: store idempotency key: %w", err)
	}
	return n == 1, nil
}

// idempotencyTx is the calls.IdempotencyTx of a write transaction.
type idempotencyTx struct{ tx *sqlx.Tx }

// IdempotencyRecord locks the key for the rest of the transaction and
// reads its record, nil when none is live at now.
func (t idempotencyTx) IdempotencyRecord(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	return lockedIdempotency(ctx, t.tx, scope, key, now)
}

// PutIdempotencyRecord stores rec in the write transaction, with the
// change. A live record under the key (a request with the same key that
// committed without taking the key's lock) fails the transaction, so the
// change never runs twice.
func (t idempotencyTx) PutIdempotencyRecord(ctx context.Context, rec calls.IdempotencyRecord) error {
	if _, err := t.tx.ExecContext(ctx, lockIdempotency, rec.Scope, rec.Key); err != nil {
		return fmt.Errorf("db: lock idempotency key: %w", err)
	}
	stored, err := putIdempotency(ctx, t.tx, rec)
	if err != nil {
		return err
	}
	if !stored {
		return fmt.Errorf("db: idempotency key %q is held by another request: %w", rec.Key, calls.ErrUnavailable)
	}
	return nil
}

// LookupIdempotency reads the committed record under (scope, key), nil
// when none is live at now.
func (s *Store) LookupIdempotency(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	var rec *calls.IdempotencyRecord
	err := s.read(ctx, func(tx *sqlx.Tx) (err error) {
		rec, err = getIdempotency(ctx, tx, scope, key, now)
		return err
	})
	return rec, err
}

// PutIdempotency stores rec in its own transaction unless a live record
// holds the key; it reports whether rec was stored.
func (s *Store) PutIdempotency(ctx context.Context, rec calls.IdempotencyRecord) (bool, error) {
	var stored bool
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		cur, err := lockedIdempotency(ctx, tx, rec.Scope, rec.Key, rec.CreatedAt)
		if err != nil || cur != nil {
			stored = false
			return err
		}
		stored, err = putIdempotency(ctx, tx, rec)
		return err
	})
	return stored && err == nil, err
}

// PruneIdempotency deletes the records expired at before, in batches, and
// returns how many it deleted.
func (s *Store) PruneIdempotency(ctx context.Context, before int64) (int64, error) {
	return s.pruneLoop(ctx, "idempotency keys", `DELETE FROM idempotency_keys WHERE (scope, key) IN (
		SELECT scope, key FROM idempotency_keys WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)`, before)
}
