package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/db"
)

// Idempotency-Key records. The use-cases read and write them inside their
// own write transaction (idempotencyTx, part of callsTx and webhookTx), so
// a record commits with the change it guards. The HTTP layer reads them
// for its fast path (LookupIdempotency) and stores the answers of requests
// that changed nothing (PutIdempotency). All times are Unix milliseconds.

const selectIdempotency = `SELECT fingerprint, status, content_type, body, created_at, expires_at
	FROM idempotency_keys WHERE scope = ? AND key = ? AND expires_at > ?`

// upsertIdempotency inserts a record; an existing one is replaced only when
// it has expired (the excluded row's created_at is the new request's now),
// so a live record is never overwritten.
const upsertIdempotency = `INSERT INTO idempotency_keys
	(scope, key, fingerprint, status, content_type, body, created_at, expires_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (scope, key) DO UPDATE SET
		fingerprint = excluded.fingerprint, status = excluded.status,
		content_type = excluded.content_type, body = excluded.body,
		created_at = excluded.created_at, expires_at = excluded.expires_at
	WHERE idempotency_keys.expires_at <= excluded.created_at`

// getIdempotency reads a record with st, selectIdempotency prepared and
// bound to the transaction: an unprepared statement is parsed again on
// every request, which made a keyed write cost half again an unkeyed one
// (docs/benchmarks.md).
func getIdempotency(ctx context.Context, st *sqlx.Stmt, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	rec := &calls.IdempotencyRecord{Scope: scope, Key: key}
	err := st.QueryRowxContext(ctx, scope, key, now).Scan(&rec.Fingerprint,
		&rec.Response.Status, &rec.Response.ContentType, &rec.Response.Body, &rec.CreatedAt, &rec.ExpiresAt)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("db: read idempotency key: %w", err)
	}
	return rec, nil
}

// putIdempotency stores rec with st, upsertIdempotency prepared and bound
// to the write transaction.
func putIdempotency(ctx context.Context, st *sqlx.Stmt, rec calls.IdempotencyRecord) error {
	body := rec.Response.Body
	if body == nil {
		body = []byte{}
	}
	_, err := st.ExecContext(ctx, rec.Scope, rec.Key, rec.Fingerprint,
		rec.Response.Status, rec.Response.ContentType, body, rec.CreatedAt, rec.ExpiresAt)
	if err != nil {
		return fmt.Errorf("db: store idempotency key: %w", err)
	}
	return nil
}

// idempotencyTx is the calls.IdempotencyTx of a write transaction: the
// use-cases (callsTx) and the webhook admin writes (webhookTx) keep their
// records through it, with their change.
type idempotencyTx struct {
	tx *sqlx.Tx
	s  *Store
}

// IdempotencyRecord reads the record under (scope, key) inside the write
// transaction, nil when none is live at now.
func (t idempotencyTx) IdempotencyRecord(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	ctx = detached(ctx)
	return getIdempotency(ctx, t.s.txStmt(t.tx, t.s.wst.selectIdempotency), scope, key, now)
}

// PutIdempotencyRecord stores rec in the write transaction, with the change.
func (t idempotencyTx) PutIdempotencyRecord(ctx context.Context, rec calls.IdempotencyRecord) error {
	t.s.reqWrote = true // see runBare
	ctx = detached(ctx)
	return putIdempotency(ctx, t.s.txStmt(t.tx, t.s.wst.upsertIdempotency), rec)
}

// LookupIdempotency reads the record under (scope, key) from the read
// pool, nil when none is live at now. It sees only committed records, and
// returns one only once it is durable: the caller replays it as the
// answer to the request that stored it (see waitDurable).
func (s *Store) LookupIdempotency(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	var rec *calls.IdempotencyRecord
	err := s.readNow(ctx, func(tx *sqlx.Tx) error {
		var err error
		rec, err = getIdempotency(ctx, tx.Stmtx(s.rst.selectIdempotency), scope, key, now)
		return err
	})
	if err != nil || rec == nil {
		return rec, err // a miss needs no wait: nothing is replayed
	}
	if err := s.durable(ctx); err != nil {
		return nil, err
	}
	return rec, nil
}

// PutIdempotency stores rec in its own transaction unless a live record
// holds the key; it reports whether rec was stored. It is for answers that
// changed nothing (a refused request): those have no change to commit with.
func (s *Store) PutIdempotency(ctx context.Context, rec calls.IdempotencyRecord) (bool, error) {
	var stored bool
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		ctx := detached(ctx)
		t := idempotencyTx{tx, s}
		cur, err := t.IdempotencyRecord(ctx, rec.Scope, rec.Key, rec.CreatedAt)
		if err != nil || cur != nil {
			return err
		}
		stored = true
		return t.PutIdempotencyRecord(ctx, rec)
	})
	return stored && err == nil, err
}

// PruneIdempotency deletes the records expired at before, in batches through
// the writer (see pruneBatch), and returns how many it deleted.
func (s *Store) PruneIdempotency(ctx context.Context, before int64) (int64, error) {
	return db.InBatches(ctx, "idempotency keys", pruneBatch, func() (n int64, err error) {
		err = s.write(ctx, func(tx *sqlx.Tx) error {
			// The expires_at index makes the inner select a range scan.
			res, err := tx.ExecContext(detached(ctx), `DELETE FROM idempotency_keys WHERE rowid IN (
				SELECT rowid FROM idempotency_keys WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)`, before, pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		return n, err
	})
}
