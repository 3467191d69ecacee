package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// The webhook endpoints, their outbox and the admin view of its deliveries,
// as every backend keeps them: the same tables, read and written by the
// same Go logic (here, outbox.go and outbox_schedule.go). What differs
// between backends is given to NewWebhooks: the SQL they spell their own
// way (booleans, collations, index hints, row locks) as a WebhookSQL, and
// how a transaction runs (SQLite's single writer with group commit,
// PostgreSQL's transaction per request). The statements spelled alike in
// every dialect are written here with ? placeholders and rebound for the
// driver of the transaction (tx.Rebind: a no-op for SQLite).

// RunTx runs fn in a transaction of a backend: what fn writes commits
// together (and durably before RunTx returns), or nothing does when fn
// fails. For reads, fn sees one snapshot.
type RunTx func(ctx context.Context, fn func(tx *sqlx.Tx) error) error

// WebhookSQL is a backend's text of the webhook statements it spells its
// own way. Each takes the arguments named in its comment, in that order.
type WebhookSQL struct {
	// PutEndpoint(id, url, secret, event types, description, created at)
	// creates or replaces an endpoint; a replaced one keeps its creation
	// time and is enabled again only when its URL or secret changed.
	PutEndpoint string
	// DeleteEndpoint(id) soft-deletes a live endpoint and disables it.
	DeleteEndpoint string
	// EndpointExists(id) selects 1 for a live endpoint.
	EndpointExists string
	// DisableEndpoint(reason, id) disables an enabled endpoint.
	DisableEndpoint string
	// EndpointURL(id) reads an endpoint's URL, locking its row until the
	// transaction ends where the store locks rows: a PutEndpoint moving
	// it commits before the read or after the transaction.
	EndpointURL string
	// EndpointState(id) selects enabled, deleted, disabled_reason of an
	// endpoint, locking its row until the transaction ends where the
	// store locks rows: a 410's outcome or a deletion, committing
	// beside a put, is seen by the put's failing of a dead backlog
	// (PutWebhookEndpoint) before it enables the endpoint again.
	EndpointState string

	// LiveEndpoints() selects id, url, secret of the enabled, live
	// endpoints, ordered by id bytewise.
	LiveEndpoints string
	// FailDeadEndpoints(now, limit) fails up to limit pending deliveries,
	// not leased at now, of the endpoints disabled or deleted.
	FailDeadEndpoints string
	// ClaimEndpoint(endpoint id, now, now, limit) selects id, attempts,
	// created_at, next_attempt_at, message_id of an endpoint's pending
	// deliveries due at now and not leased at now, in due order (then id),
	// locking them where the backend has row locks.
	ClaimEndpoint string
	// NextDueByEndpoint(now) selects each live endpoint's id and when its
	// earliest pending delivery not leased at now is due (NULL: none).
	NextDueByEndpoint string
	// NextLeaseEnd(now) selects when the earliest lease running at now
	// ends (0: none).
	NextLeaseEnd string
	// PruneDeliveries(before, limit) deletes up to limit finished
	// deliveries created before before, RETURNING their message_id.
	PruneDeliveries string
	// PruneMessage(id) deletes a message no delivery refers to any more.
	PruneMessage string
	// PurgeEndpoints(deleted before, limit) deletes up to limit endpoints
	// deleted before then that no delivery refers to any more.
	PurgeEndpoints string
	// StampDeleted(now) gives deleted endpoints without a deletion time
	// (deleted before the column, or by a node of an older version during
	// a rolling upgrade) now as theirs.
	StampDeleted string
	// ExpireDeliveries(reason, before, now, limit) fails up to limit
	// pending deliveries created before before, due before it too, and
	// not leased at now, with reason as their last error.
	ExpireDeliveries string
	// PendingCount(endpoint id, limit) counts an endpoint's pending
	// deliveries, up to limit (keep+1: enough to tell whether it is past
	// keep).
	PendingCount string
	// BacklogCut(endpoint id, offset) selects the id of an endpoint's
	// pending delivery with offset newer pending ones (no row: none).
	BacklogCut string
	// DropDeliveries(reason, endpoint id, up to, now, limit) fails up to
	// limit pending deliveries of the endpoint with an id up to up to and
	// not leased at now, with reason as their last error.
	DropDeliveries string
	// FailPending(reason, endpoint id, now, limit) fails up to limit of
	// an endpoint's pending deliveries not leased at now, with reason as
	// their last error: a range of the partial index on the pending ones.
	// None while the endpoint is enabled and not deleted: put back between
	// two batches of its deletion, what is queued for it is its own.
	FailPending string
	// AttemptsInFlight(now, endpoint id) counts the endpoint's deliveries
	// leased at now: a range of the partial index on locked_until > 0,
	// the handful of leases running, never the endpoint's delivery log.
	// The statement must spell the literal locked_until > 0: from the
	// bound now alone no planner can tell that index holds the rows.
	AttemptsInFlight string
}

// Webhooks implements the webhooks.Store methods whose logic every backend
// shares; a backend embeds it and adds UpdateWebhooks (its own webhooks.Tx,
// whose methods call InsertEndpoint and RetryDelivery with its SQL), the
// endpoint reads and the queue statistics.
type Webhooks struct {
	sql         WebhookSQL
	write, read RunTx
	// stmtCtx, when set, is the context a write's statements run on,
	// made from the caller's (see WithStatementContext).
	stmtCtx func(context.Context) context.Context
	// preparedWrite and preparedRead, when set, give the dispatcher's
	// statements prepared in advance (see WithPrepared).
	preparedWrite, preparedRead Prepared
}

// Prepared returns query ready to run in tx: a statement the backend
// prepared in advance, bound to tx, or else the text on tx.
type Prepared func(tx *sqlx.Tx, query string) Statement

// NewWebhooks returns the shared webhook store over a backend's SQL and
// transactions.
func NewWebhooks(q WebhookSQL, write, read RunTx) Webhooks {
	return Webhooks{sql: q, write: write, read: read}
}

// WithStatementContext returns w with its writes' statements run on
// f(ctx): SQLite's group commit detaches them from the caller's
// cancellation, since an interrupted statement would roll back the whole
// batch the write shares with others.
func (w Webhooks) WithStatementContext(f func(context.Context) context.Context) Webhooks {
	w.stmtCtx = f
	return w
}

// WithPrepared returns w with the statements of DispatcherStatements run
// through write (in its writes' transactions) and read (in its reads').
// Every claim, outcome and schedule read of the dispatcher runs them, and
// SQLite's driver parses SQL text anew on every run: that was a sixth of
// the CPU of draining a backlog (BenchmarkWebhookDrain). PostgreSQL's
// driver keeps its own cache of prepared statements per connection.
func (w Webhooks) WithPrepared(write, read Prepared) Webhooks {
	w.preparedWrite, w.preparedRead = write, read
	return w
}

// writeStatement is query in a write's tx, prepared if the backend
// prepared it.
func (w Webhooks) writeStatement(tx *sqlx.Tx, query string) Statement {
	return prepared(w.preparedWrite, tx, query)
}

// readStatement is query in a read's tx, prepared if the backend prepared
// it.
func (w Webhooks) readStatement(tx *sqlx.Tx, query string) Statement {
	return prepared(w.preparedRead, tx, query)
}

func prepared(p Prepared, tx *sqlx.Tx, query string) Statement {
	if p != nil {
		return p(tx, query)
	}
	return TxStatement(tx, query)
}

// DispatcherStatements returns the statements the dispatcher runs at
// every claim and outcome (writes) and every look at the schedule
// (reads), as Webhooks runs them with q, for a backend to prepare.
func DispatcherStatements(q WebhookSQL) (writes, reads []string) {
	writes = []string{q.FailDeadEndpoints, q.LiveEndpoints, q.ClaimEndpoint,
		sqlRenewDelivery, sqlLeaseDelivery, sqlSelectMessage, sqlFinishAttempt, sqlReleaseDelivery}
	reads = []string{q.NextDueByEndpoint, q.NextLeaseEnd}
	return writes, reads
}

// statementCtx is the context of a write's statements.
func (w Webhooks) statementCtx(ctx context.Context) context.Context {
	if w.stmtCtx == nil {
		return ctx
	}
	return w.stmtCtx(ctx)
}

// The statements spelled alike everywhere, with ? placeholders.
const (
	// Is any of an endpoint's deliveries pending, not leased at now, while
	// it is dead (failBatch)? The conditions of WebhookSQL.FailPending.
	sqlDeadPendingLeft = `SELECT 1 FROM webhook_deliveries
		WHERE endpoint_id = ? AND status = 'pending' AND locked_until <= ?
		AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ? AND (NOT enabled OR deleted)) LIMIT 1`
	// An endpoint's deliveries, newest first: a backward walk of
	// webhook_deliveries_by_endpoint, or with a status of
	// webhook_deliveries_by_endpoint_status (SQLite's 0013, PostgreSQL's
	// 0011), never a filter over the endpoint's whole log: an admin's
	// look for its few failed deliveries among millions delivered read
	// them all (found by review: 19 s for 2 million). The ORDER BY names
	// the index's columns, fixed by the WHERE, as well as id: ordered by
	// id alone, PostgreSQL's generic plan walked the primary key back
	// through every endpoint's deliveries. For the same reason the
	// endpoint is a range of one (as in the backlog cut): an equality
	// lets the planner drop endpoint_id from the ORDER BY. The messages
	// are a CROSS JOIN, which SQLite never reorders: with the statistics
	// a production file carries (webhook_messages analyzed when it was
	// small, see TestQueryPlansUnderProductionStatistics), SQLite scanned
	// every message, looked up its deliveries and sorted them, 5-10 s for
	// 3.5 million messages where the index walk takes a millisecond.
	// PostgreSQL plans a CROSS JOIN with a WHERE as the inner join it is.
	sqlSelectDeliveries = `SELECT ` + DeliveryColumns + ` FROM webhook_deliveries d
		CROSS JOIN webhook_messages m
		WHERE m.id = d.message_id AND d.endpoint_id >= ? AND d.endpoint_id <= ?
		ORDER BY d.endpoint_id DESC, d.id DESC LIMIT ?`
	// With a status, the status is a range of one as well: as an
	// equality, where it is common among all deliveries (another
	// endpoint's failed backlog), PostgreSQL took the endpoint's share of
	// it for as common and, the order being id alone, walked the primary
	// key back filtering every delivery (0.4-0.7 s for 4.6 million, in
	// the generic and the custom plan alike, for an endpoint with none).
	sqlSelectDeliveriesByStatus = `SELECT ` + DeliveryColumns + ` FROM webhook_deliveries d
		CROSS JOIN webhook_messages m
		WHERE m.id = d.message_id AND d.endpoint_id = ? AND d.status >= ? AND d.status <= ?
		ORDER BY d.endpoint_id DESC, d.status DESC, d.id DESC LIMIT ?`
	sqlSelectDelivery = `SELECT ` + DeliveryColumns + ` FROM webhook_deliveries d
		JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = ?`
	sqlRetryDelivery = `UPDATE webhook_deliveries
		SET status = 'pending', next_attempt_at = ?, delivered_at = 0 WHERE id = ?`
)

// WebhookNotFound is the error of an unknown or deleted endpoint.
func WebhookNotFound(id string) error {
	return &calls.Error{Code: calls.CodeNotFound, Message: fmt.Sprintf("webhook %s not found", id)}
}

// InsertEndpoint registers a new endpoint, secret included (webhooks.Tx):
// query takes id, url, secret, event types, description and creation time,
// and inserts the endpoint enabled.
func InsertEndpoint(ctx context.Context, tx *sqlx.Tx, query string, e *webhooks.Endpoint) error {
	_, err := tx.ExecContext(ctx, query,
		e.ID, e.URL, e.Secret, EncodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
	if err != nil {
		return fmt.Errorf("db: insert webhook %s: %w", e.ID, err)
	}
	return nil
}

// PutWebhookEndpoint creates or replaces the endpoint with e.ID, as the
// configuration (not the API) describes it. A replaced endpoint keeps its
// creation time; it is enabled again only when its URL or secret changed,
// so restarting with the configuration that earned a 410 does not undo it.
//
// An endpoint disabled (a 410) or deleted has what is left of its pending
// deliveries not leased at e.CreatedAt (the time of the put) failed
// first, a batch per write (failBatch), then put: a 410
// fails one batch, the claims' sweep of dead endpoints the rest, one at
// each claim, and no claim runs while no endpoint is live. Enabled again
// by a new address, the endpoint had the rest sent to it: deliveries
// queued for the address that answered 410, or for an endpoint deleted.
func (w Webhooks) PutWebhookEndpoint(ctx context.Context, e *webhooks.Endpoint) error {
	for {
		more := false
		err := w.write(ctx, func(tx *sqlx.Tx) (err error) {
			ctx := w.statementCtx(ctx)
			more, err = w.failDeadBacklog(ctx, tx, e.ID, e.CreatedAt)
			if err != nil {
				return err
			}
			if more {
				return nil // a batch per write; the put once none is left
			}
			_, err = tx.ExecContext(ctx, w.sql.PutEndpoint,
				e.ID, e.URL, e.Secret, EncodeEventTypes(e.EventTypes), e.Description, e.CreatedAt)
			return err
		})
		if err != nil {
			return fmt.Errorf("db: put webhook %s: %w", e.ID, err)
		}
		if !more {
			return nil
		}
	}
}

// failDeadBacklog fails a batch of the pending deliveries not leased at
// now of the endpoint id if it is disabled or deleted, and returns how
// many (PutWebhookEndpoint).
func (w Webhooks) failDeadBacklog(ctx context.Context, tx *sqlx.Tx, id string, now int64) (bool, error) {
	var enabled, deleted bool
	var reason string
	err := tx.QueryRowContext(ctx, w.sql.EndpointState, id).Scan(&enabled, &deleted, &reason)
	if errors.Is(err, sql.ErrNoRows) || err == nil && enabled && !deleted {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	reason = "endpoint disabled: " + reason
	if deleted {
		reason = "endpoint deleted"
	}
	return w.failBatch(ctx, tx, id, now, reason)
}

// failBatch fails a batch of a dead endpoint's pending deliveries
// (failPending) and reports whether any may be left. A batch that failed
// none is not the end on PostgreSQL: it waits for the rows another
// transaction holds and skips those it finds failed, so when another
// node's sweep of dead endpoints (WebhookSQL.FailDeadEndpoints) held
// all of the batch, none came back with more pending past it. Then one
// read more, its snapshot taken after that wait, says whether any are.
func (w Webhooks) failBatch(ctx context.Context, tx *sqlx.Tx, id string, now int64, reason string) (bool, error) {
	n, err := w.failPending(ctx, tx, id, now, reason)
	if err != nil || n > 0 {
		return n > 0, err
	}
	var one int
	err = tx.QueryRowContext(ctx, tx.Rebind(sqlDeadPendingLeft), id, now, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("db: deliveries left of %s: %w", id, err)
	}
	return true, nil
}

// DeleteWebhookEndpoint soft-deletes an endpoint (its deliveries keep
// pointing at the row) and fails its pending deliveries not in flight at
// now, so nothing more is sent to it. An unknown or already deleted id
// matches calls.ErrNotFound.
//
// The deliveries are failed a batch per write (failPending), the first
// with the deletion: no claim takes a deleted endpoint's deliveries, so
// nothing is sent in between, and a backlog never holds the writer for
// long. The later batches go on when ctx ends (the client gave up). One
// the store cannot serve now is tried again, a few times; should one
// fail for good, the deletion stands and the error is returned (the
// claims' sweep of dead endpoints, WebhookSQL.FailDeadEndpoints, fails
// the rest when a claim comes).
// Only an empty batch ends the loop: on PostgreSQL a batch comes back
// short too when another node's sweep, running beside it, held some of
// its rows and failed them, and the rest were left pending after the 204.
// A batch is empty too once the endpoint is live again (another node's
// PutWebhookEndpoint brought the id back): from then on what is pending
// is the live endpoint's.
func (w Webhooks) DeleteWebhookEndpoint(ctx context.Context, id string, now int64) error {
	var more bool
	err := w.write(ctx, func(tx *sqlx.Tx) error {
		ctx := w.statementCtx(ctx)
		res, err := tx.ExecContext(ctx, w.sql.DeleteEndpoint, now, id)
		if err != nil {
			return fmt.Errorf("db: delete webhook %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("db: delete webhook %s: %w", id, err)
		} else if n == 0 {
			return WebhookNotFound(id)
		}
		more, err = w.failBatch(ctx, tx, id, now, "endpoint deleted")
		return err
	})
	// The rest whether or not the caller waits any longer (a client that
	// hangs up, the REST deadline): a claim's sweep would fail what is
	// left only when something else brings a claim, none while no
	// endpoint is live, and it stayed pending (listed, counted in the
	// queue's statistics) until it expired.
	bg := context.WithoutCancel(ctx)
	pause := batchRetryPause
	for tries := 1; err == nil && more; tries++ {
		err = w.write(bg, func(tx *sqlx.Tx) (err error) {
			more, err = w.failBatch(w.statementCtx(bg), tx, id, now, "endpoint deleted")
			return err
		})
		// A batch the store cannot serve now (a statement timeout behind
		// a row another transaction holds, a deadlock's abort, a
		// connection lost) is tried again: given up at once, the 204
		// went out with the rest pending, which nothing failed but its
		// expiry (no claim comes for a dead endpoint). Past the bound,
		// the error, not a 204 over a backlog still pending.
		if err != nil && errors.Is(err, calls.ErrUnavailable) && !errors.Is(err, ErrClosed) && tries < batchRetries {
			time.Sleep(pause)
			err, more, pause = nil, true, 2*pause
			continue
		}
		if err != nil {
			return fmt.Errorf("db: webhook %s deleted; failing its pending deliveries: %w", id, err)
		}
	}
	return err
}

// A batch of a deletion's backlog the store cannot serve now is tried
// batchRetries times in all, pausing batchRetryPause, then twice as long
// each time (some 6 s in all): about what a failover or a lock held
// past a statement timeout takes to clear.
const (
	batchRetries    = 8
	batchRetryPause = 50 * time.Millisecond
)

// WebhookAttemptsInFlight counts the deliveries of an endpoint leased at
// now (Unix ms): attempts a dispatcher, of any node, claimed and has not
// recorded yet, which may still be sending (or about to).
func (w Webhooks) WebhookAttemptsInFlight(ctx context.Context, endpointID string, now int64) (int, error) {
	var n int
	err := w.read(ctx, func(tx *sqlx.Tx) error {
		return tx.QueryRowContext(ctx, w.sql.AttemptsInFlight, now, endpointID).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("db: attempts in flight to %s: %w", endpointID, err)
	}
	return n, nil
}

// FailBatch bounds the pending deliveries of an endpoint that goes
// (deleted, or disabled by a 410) one write transaction fails: a receiver
// long down is owed up to CALLSIG_WEBHOOK_MAX_PENDING of them (100,000 by
// default, and what came since the last pruning pass), and failing them
// all in one statement held the SQLite writer, so every request, some
// 1.5 s for 100,000 (found on a file of 3 million calls). In batches the
// deletion of those took 8 s under 300 call cycles/s, no request slower
// than 336 ms.
const FailBatch = 1000

// failPending fails up to FailBatch pending deliveries of an endpoint that
// will not be sent to any more, and returns how many. Those leased at now
// are left to their attempt in flight, which records what the receiver
// really answered; should it ask for a retry, the claim fails the
// delivery then. Those beyond the batch are never claimed either (the
// endpoint is no longer live); DeleteWebhookEndpoint fails them a batch
// per write, and the claims' sweep of dead endpoints does for a disabled
// one.
func (w Webhooks) failPending(ctx context.Context, tx *sqlx.Tx, endpointID string, now int64, reason string) (int64, error) {
	res, err := tx.ExecContext(ctx, w.sql.FailPending, reason, endpointID, now, FailBatch)
	if err != nil {
		return 0, fmt.Errorf("db: fail deliveries of %s: %w", endpointID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("db: fail deliveries of %s: %w", endpointID, err)
	}
	return n, nil
}

// WebhookDeliveries lists an endpoint's deliveries newest first, or fails
// with calls.ErrNotFound for an unknown endpoint.
func (w Webhooks) WebhookDeliveries(ctx context.Context, endpointID string, q webhooks.DeliveryQuery) ([]webhooks.Delivery, error) {
	if q.Limit <= 0 {
		q.Limit = webhooks.DefaultDeliveryLimit
	}
	list := []webhooks.Delivery{}
	err := w.read(ctx, func(tx *sqlx.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, w.sql.EndpointExists, endpointID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return WebhookNotFound(endpointID)
		}
		if err != nil {
			return err
		}
		query, args := DeliveriesQuery(endpointID, q)
		rows, err := tx.QueryContext(ctx, tx.Rebind(query), args...)
		if err != nil {
			return err
		}
		list, err = ScanRows(rows, ScanDelivery)
		return err
	})
	if err != nil && calls.CodeOf(err) == "" {
		err = fmt.Errorf("db: list deliveries of %s: %w", endpointID, err)
	}
	return list, err
}

// DeliveriesQuery is the statement listing an endpoint's deliveries
// newest first, as q asks, and its arguments (? placeholders); exported for
// the backends' plan tests.
func DeliveriesQuery(endpointID string, q webhooks.DeliveryQuery) (string, []any) {
	if q.Status != "" {
		return sqlSelectDeliveriesByStatus, []any{endpointID, string(q.Status), string(q.Status), q.Limit}
	}
	return sqlSelectDeliveries, []any{endpointID, endpointID, q.Limit}
}

// RetryDelivery puts a delivery of a live endpoint back to pending, due at
// now, whatever its status, and returns it (webhooks.Tx). Its attempt count
// is kept: a failed delivery retried by hand gets one more attempt. A
// delivery leased at now (an attempt in flight) is refused with
// calls.ErrDeliveryInFlight: that attempt's outcome would overwrite the
// retry. One of a disabled endpoint is refused with
// calls.ErrEndpointDisabled: the dispatcher would fail it unsent.
//
// target takes the delivery id and the endpoint id and selects the
// delivery's locked_until and its live endpoint's enabled and
// disabled_reason, locking the delivery where the backend has row locks.
func RetryDelivery(ctx context.Context, tx *sqlx.Tx, target, endpointID string, deliveryID, now int64) (*webhooks.Delivery, error) {
	var (
		lockedUntil int64
		enabled     bool
		reason      string
	)
	err := tx.QueryRowContext(ctx, target, deliveryID, endpointID).Scan(&lockedUntil, &enabled, &reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, &calls.Error{Code: calls.CodeNotFound,
			Message: fmt.Sprintf("delivery %d of webhook %s not found", deliveryID, endpointID)}
	case err != nil:
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	case !enabled:
		return nil, &calls.Error{Code: calls.CodeEndpointDisabled,
			Message: fmt.Sprintf("webhook %s is disabled (%s); delivery %d would not be sent", endpointID, reason, deliveryID)}
	case lockedUntil > now:
		return nil, &calls.Error{Code: calls.CodeDeliveryInFlight,
			Message: fmt.Sprintf("delivery %d of webhook %s is being attempted now; retry once the attempt ends", deliveryID, endpointID)}
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(sqlRetryDelivery), now, deliveryID); err != nil {
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	}
	d, err := ScanDelivery(tx.QueryRowContext(ctx, tx.Rebind(sqlSelectDelivery), deliveryID))
	if err != nil {
		return nil, fmt.Errorf("db: retry delivery %d: %w", deliveryID, err)
	}
	return &d, nil
}
