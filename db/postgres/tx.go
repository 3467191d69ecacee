package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"callsig/calls"
	"callsig/db"
)

// Update runs fn in its own transaction (one per request: PostgreSQL
// group-commits concurrent ones) and returns once the commit is durable.
// A transaction PostgreSQL aborts to resolve a conflict is run again (see
// retryConflicts); calls.Store.Update allows fn to run more than once.
func (s *Store) Update(ctx context.Context, fn func(calls.Tx) error) error {
	return s.retryConflicts(ctx, func() error {
		return s.inPipeTx(ctx, func(p *pipe) error { return fn(newCallsTx(p)) })
	})
}

// callsTx is the calls.Tx given to an Update fn.
type callsTx struct {
	// p is the transaction: Call and BusyUsers send their statements in
	// one pipeline each (send), Save queues its own for the next (stage).
	p *pipe
	// pending are users whose rows LockUsers or a pipeline asked for and
	// no statement has taken yet, in user order: the next pipeline takes
	// them first (stage), which saves LockUsers a round trip of its own.
	pending []string
	// locked holds the users whose event_users row this transaction has
	// taken (queueLocks): a use-case takes them up front (LockUsers), and
	// the busy check and Save would otherwise take them again.
	locked map[string]struct{}
	// last holds, per user whose row this transaction took, the id of the
	// user's newest event: read when the row was taken, then each event
	// this transaction gives the user (Event.After).
	last map[string]int64
	// rows holds the calls' rows as this transaction read them for update
	// (Calls) or last wrote them (Save): Save skips an update that would
	// leave a row as it is, a statement of each delivery mark.
	rows map[string]db.CallRow
}

func newCallsTx(p *pipe) *callsTx {
	return &callsTx{p: p, locked: map[string]struct{}{}, last: map[string]int64{}, rows: map[string]db.CallRow{}}
}

// IdempotencyRecord locks the key for the rest of the transaction and
// reads its record, nil when none is live at now: both statements in one
// round trip (the first of a keyed request, so BEGIN's too).
func (t *callsTx) IdempotencyRecord(ctx context.Context, scope, key string, now int64) (*calls.IdempotencyRecord, error) {
	var rec *calls.IdempotencyRecord
	b := &pgx.Batch{}
	b.Queue(lockIdempotency, scope, key)
	b.Queue(selectIdempotency, scope, key, now).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			r := &calls.IdempotencyRecord{Scope: scope, Key: key}
			if err := rows.Scan(&r.Fingerprint, &r.Response.Status, &r.Response.ContentType,
				&r.Response.Body, &r.CreatedAt, &r.ExpiresAt); err != nil {
				return err
			}
			rec = r
		}
		return rows.Err()
	})
	if err := t.send(ctx, b); err != nil {
		return nil, fmt.Errorf("db: read idempotency key: %w", err)
	}
	return rec, nil
}

// PutIdempotencyRecord stores rec with the change, queued for the commit
// like Save's writes. A live record under the key (a request with the same
// key that committed without taking the key's lock) fails the transaction
// in SQL (sqlPutIdempotency), so the change never runs twice.
func (t *callsTx) PutIdempotencyRecord(ctx context.Context, rec calls.IdempotencyRecord) error {
	body := rec.Response.Body
	if body == nil {
		body = []byte{}
	}
	b := &pgx.Batch{}
	b.Queue(lockIdempotency, rec.Scope, rec.Key)
	b.Queue(sqlPutIdempotency, rec.Scope, rec.Key, rec.Fingerprint,
		rec.Response.Status, rec.Response.ContentType, body, rec.CreatedAt, rec.ExpiresAt)
	t.stage(b)
	return nil
}

// unlocked returns those of users whose row this transaction has not
// taken yet, in the order given.
func (t *callsTx) unlocked(users []string) []string {
	var todo []string
	for _, u := range users {
		if _, ok := t.locked[u]; !ok {
			todo = append(todo, u)
		}
	}
	return todo
}

// queueLocks queues on b the statement taking users' rows (none: nothing
// queued), which reads each one's newest event id into t.last. The rows
// count as taken from then on: every later statement of the transaction
// runs after this one, and if it fails the transaction fails.
func (t *callsTx) queueLocks(b *pgx.Batch, users []string) {
	if len(users) == 0 {
		return
	}
	for _, u := range users {
		t.locked[u] = struct{}{}
	}
	b.Queue(sqlLockEventUsers, users).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var u string
			var last int64
			if err := rows.Scan(&u, &last); err != nil {
				return err
			}
			t.last[u] = last
		}
		return rows.Err()
	})
}

var (
	_ calls.Tx         = (*callsTx)(nil)
	_ calls.UserLocker = (*callsTx)(nil)
)

// LockUsers takes the event_users rows of users in user order for the
// rest of the transaction (calls.UserLocker): a use-case that would
// otherwise lock some of them in its busy check and the rest when it
// saves (an invitation: its invitees, then its caller) takes them all in
// one order, so two users inviting each other at once wait for each other
// rather than deadlock.
func (t *callsTx) LockUsers(ctx context.Context, users []string) error {
	t.deferLocks(users)
	return nil
}

// deferLocks adds those of users not locked yet to the rows the next
// pipeline takes first, keeping them in user order. Nothing that runs in
// between depends on them: every statement that does (the busy check, the
// events' inserts) goes out in a pipeline, after them.
func (t *callsTx) deferLocks(users []string) {
	todo := t.unlocked(users)
	if len(todo) == 0 {
		return
	}
	t.pending = append(t.pending, todo...)
	slices.SortFunc(t.pending, strings.Compare)
	t.pending = slices.Compact(t.pending)
}

// Conflict retries: PostgreSQL aborts one transaction of a deadlock (after
// deadlock_timeout) or of a serialization failure; such a transaction
// changed nothing and is run again, up to conflictAttempts times in all,
// after a short, growing pause, before the conflict is answered 503.
const (
	conflictAttempts = 4
	conflictBackoff  = 5 * time.Millisecond
)

// retryConflicts runs write until it succeeds, fails otherwise than by a
// conflict, or has been tried conflictAttempts times.
func (s *Store) retryConflicts(ctx context.Context, write func() error) error {
	wait := conflictBackoff
	for n := 1; ; n++ {
		err := write()
		if err == nil || n >= conflictAttempts || !conflict(err) {
			return err
		}
		t := time.NewTimer(wait + time.Duration(rand.Int64N(int64(wait))))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// conflict reports whether err is PostgreSQL aborting a transaction to
// resolve a conflict with another: deadlock_detected (40P01) or
// serialization_failure (40001).
func conflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// The statements of the write path.
const (
	// FOR UPDATE: concurrent writers of one call, on any node, take turns,
	// each seeing the call as the one before committed it. That is what
	// makes a deadline fire once: the second Expire finds it cleared.
	sqlSelectCallForUpdate = `SELECT ` + db.CallColumns + ` FROM calls WHERE id = $1 FOR UPDATE`
	sqlSelectCallByID      = `SELECT ` + db.CallColumns + ` FROM calls WHERE id = $1`
	sqlSelectUsers         = `SELECT ` + db.UserColumns + ` FROM call_users WHERE call_seq = $1 ORDER BY ord`
	sqlSelectUsersOfCallID = `SELECT ` + db.UserColumns + ` FROM call_users
		WHERE call_seq = (SELECT seq FROM calls WHERE id = $1) ORDER BY ord`

	sqlInsertCall = `INSERT INTO calls (id, caller, mode, state, timeout, extended_data, create_time,
		end_time, end_reason, not_received_check, caller_tracked, caller_offline_at, presence_matters)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq`
	// sqlUpdateCall fails (callsig_fail) when the call does not exist: it
	// is sent with the commit, too late for a check in Go.
	sqlUpdateCall = `WITH u AS (UPDATE calls SET mode = $1, state = $2, timeout = $3, extended_data = $4,
		end_time = $5, end_reason = $6, not_received_check = $7, caller_tracked = $8, caller_offline_at = $9,
		presence_matters = $10
		WHERE id = $11 RETURNING seq)
		SELECT coalesce((SELECT seq FROM u), callsig_fail('` + codeCallNotFound + `', 'no such call'))`
	sqlUpsertUser = `INSERT INTO call_users (call_seq, user_id, ord, state, inviter, extended_data,
		update_time, invite_time, accept_time, timeout_at, not_received_at, main_device,
		missed_time, busy)
		VALUES ((SELECT seq FROM calls WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT (call_seq, user_id) DO UPDATE SET ord = excluded.ord, state = excluded.state,
		inviter = excluded.inviter, extended_data = excluded.extended_data,
		update_time = excluded.update_time, invite_time = excluded.invite_time,
		accept_time = excluded.accept_time, timeout_at = excluded.timeout_at,
		not_received_at = excluded.not_received_at, main_device = excluded.main_device,
		missed_time = excluded.missed_time, busy = excluded.busy`
	// sqlClearBusy names the call's users ($2) as well as the call: with
	// the call alone, a generic plan made on statistics taken while few
	// users were busy reads the partial index of every busy user in every
	// call (call_users_busy) instead of probing the primary key: 12 ms with
	// 100,000 users busy (TestClearBusyPlanProbesThePrimaryKey), and the
	// slowest statement of the 100,000-deadline run.
	sqlClearBusy = `UPDATE call_users SET busy = false
		WHERE call_seq = (SELECT seq FROM calls WHERE id = $1) AND user_id = ANY($2) AND busy`

	// sqlLockEventUsers takes the event_users rows of users (creating
	// those of first-time users, last_id 0: no id given yet) in user order,
	// for the rest of the transaction, in one statement. DO UPDATE, not DO
	// NOTHING and a SELECT … FOR UPDATE: it locks a row another transaction
	// inserted and committed while this statement ran, which a SELECT in
	// the statement's snapshot would not see, let alone lock.
	sqlLockEventUsers = `INSERT INTO event_users (user_id, last_id)
		SELECT u, 0 FROM unnest($1::text[]) AS u ORDER BY u COLLATE "C"
		ON CONFLICT (user_id) DO UPDATE SET last_id = event_users.last_id
		RETURNING user_id, last_id`
)

// Call loads a call for update (the row stays locked until commit) with
// its users, both queries in one round trip. The users' query runs after
// the lock is held, in a snapshot of its own, so it reads them as the last
// writer of the call committed them.
func (t *callsTx) Call(ctx context.Context, callID string) (*calls.Call, error) {
	found, err := t.Calls(ctx, []string{callID})
	if err != nil {
		return nil, err
	}
	c, ok := found[callID]
	if !ok {
		return nil, calls.ErrCallNotFound
	}
	return c, nil
}

// Calls loads several calls for update with their users, in one round
// trip (calls.CallsLoader): the scheduler's claim of due deadlines.
func (t *callsTx) Calls(ctx context.Context, callIDs []string) (map[string]*calls.Call, error) {
	found := make(map[string]*calls.Call, len(callIDs))
	b := &pgx.Batch{}
	for _, id := range callIDs {
		var c *calls.Call
		b.Queue(sqlSelectCallForUpdate, id).QueryRow(func(row pgx.Row) (err error) {
			c, err = db.ScanCall(row)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // gone: left out
			}
			if err == nil {
				c.Users = []*calls.CallUser{}
				found[id] = c
			}
			return err
		})
		b.Queue(sqlSelectUsersOfCallID, id).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				u, err := db.ScanUser(rows)
				if err != nil {
					return err
				}
				if c != nil {
					c.Users = append(c.Users, u)
				}
			}
			if c != nil {
				t.rows[id] = db.RowOf(c)
			}
			return rows.Err()
		})
	}
	if err := t.send(ctx, b); err != nil {
		return nil, fmt.Errorf("db: load %d calls: %w", len(callIDs), err)
	}
	return found, nil
}

var _ calls.CallsLoader = (*callsTx)(nil)

// Save writes a transition's outcome (see calls.Tx) as db.SaveLog does on
// SQLite, but queued for the commit's round trip (pipe): the call and user
// rows, the recipients' locks, the events (an invitation's id recorded by
// its insert) and the webhook messages. Each statement runs in order, as
// if sent one by one (a failed one fails the rest and the transaction);
// the events' IDs and After, the call's Seq and ch.HooksQueued are set
// when the results are read, at the latest once Update has committed.
// Rows of the call are addressed by its id, so a new call's insert goes in
// the same pipeline as its users.
func (t *callsTx) Save(ctx context.Context, ch *calls.Change) error {
	c := ch.Call
	if c == nil {
		return errors.New("db: save: change without a call")
	}
	b := &pgx.Batch{}
	switch row, read := t.rows[c.ID]; {
	case !ch.Created && read && row == db.RowOf(c):
		// Locked since it was read (FOR UPDATE): the row is as read.
	case ch.Created:
		b.Queue(sqlInsertCall, c.ID, c.Caller, string(c.Mode), string(c.State), c.Timeout,
			c.ExtendedData, c.CreateTime, c.EndTime, string(c.EndReason), c.NotReceivedCheck,
			c.CallerTracked, c.CallerOfflineAt, calls.PresenceMatters(c)).QueryRow(func(row pgx.Row) error {
			return row.Scan(&c.Seq)
		})
	default:
		b.Queue(sqlUpdateCall, string(c.Mode), string(c.State), c.Timeout, c.ExtendedData,
			c.EndTime, string(c.EndReason), c.NotReceivedCheck, c.CallerTracked, c.CallerOfflineAt,
			calls.PresenceMatters(c), c.ID).QueryRow(func(row pgx.Row) error {
			return row.Scan(&c.Seq)
		})
		if read {
			t.rows[c.ID] = db.RowOf(c) // as the update leaves it
		}
	}
	if !ch.Created && c.State == calls.CallEnded {
		users := make([]string, len(c.Users))
		for i, u := range c.Users {
			users[i] = u.UserID
		}
		b.Queue(sqlClearBusy, c.ID, users)
	}
	var madeBusy []string
	for i, u := range c.Users {
		if !ch.Created && !u.Dirty() {
			continue
		}
		busy := c.State == calls.CallStarted && u.State == calls.StateAccepted
		if busy {
			madeBusy = append(madeBusy, u.UserID)
		}
		b.Queue(sqlUpsertUser, c.ID, u.UserID, i, string(u.State),
			u.Inviter, u.ExtendedData, u.UpdateTime, u.InviteTime, u.AcceptTime, u.TimeoutAt,
			u.NotReceivedAt, u.MainDevice, u.MissedTime, busy)
	}
	// After the call's and users' rows, before any event: the order the
	// statements had when each was its own round trip.
	t.deferLocks(recipients(ch.Events, madeBusy))
	locks := t.pending
	t.pending = nil
	t.queueLocks(b, locks)
	if err := t.queueEvents(b, c, ch.Events); err != nil {
		return err
	}
	if err := queueHooks(b, ch); err != nil {
		return err
	}
	t.stage(b)
	return nil
}

// recipients returns, sorted and once each, the events' recipients and
// the users written busy: the rows Save takes, in user order, before any
// event is inserted. Two changes addressing the same users in another
// order so wait for each other instead of deadlocking, and a busy check
// (BusyUsers) waits for a change making one of its users busy. Taking the
// row of a lone recipient too (sqlInsertEvent would) costs no round trip in
// the pipeline and reads the user's newest id, each event's After.
func recipients(evs []calls.Event, busy []string) []string {
	users := slices.Clone(busy)
	for _, ev := range evs {
		users = append(users, ev.UserID)
	}
	slices.Sort(users)
	return slices.Compact(users)
}

// noInviteeAccepted is the SQL side of calls.CallerOfflineApplies: no
// invitee ever accepted, an invitee being a user someone else invited (a
// user who joined uninvited is his own inviter, as the caller is). Rows it
// selects are filtered again with the pure predicate.
const noInviteeAccepted = `NOT EXISTS (SELECT 1 FROM call_users u
	WHERE u.call_seq = c.seq AND u.user_id <> c.caller AND u.inviter <> u.user_id AND u.accept_time > 0)`

// The caller-presence queries lock the calls they return (FOR UPDATE OF
// c), as callsTx.Call does: Save writes every column of a call back from
// the copy read here, so a copy read unlocked would undo a change another
// node committed meanwhile (an invitee's accept ending the call would be
// written back as started, with the caller's grace armed). They wait for
// a call another transaction holds, never SKIP LOCKED: a presence change
// passed over would be lost, as no later round looks for it.
//
// This cannot deadlock. A presence transaction waits only for call rows,
// and takes them in seq order (the lock sits above ORDER BY, and seq never
// changes, so the order holds across a wait; LIMIT counts only the rows
// that still match once locked). It takes no other lock: CallerPresence
// changes no user and gives no event, so Save takes no event_users row.
// Whoever else waits for a call row holds no other call row meanwhile: a
// change of one call (mutate) locks its call first, after nothing but its
// idempotency key, which only a request with the same key waits for, one
// holding nothing yet; another presence transaction goes in seq order
// too; a new call's insert waits for no existing row; the deadline claims
// skip locked calls. So no cycle of waits can pass through a presence
// transaction.
//
// The users are read by a statement of their own once the calls are
// locked (queryCalls), in a new snapshot (READ COMMITTED): they are the
// rows the last writer of each call committed, which CallerPresence
// checks again (CallerOfflineApplies), whatever the SQL re-check of a row
// updated meanwhile saw of call_users.
var (
	// Migration 0005's index holds just the calls presence can change,
	// and the calls a node before 0005 inserted (0013), which keep the
	// mark when they end there: state = 'started' leaves those unlocked.
	sqlCallerOfflineCalls = `SELECT ` + db.Prefixed("c.", db.CallColumns) + ` FROM calls c
		WHERE c.caller = $1 AND c.presence_matters AND c.state = 'started' AND c.seq > $2
		ORDER BY c.seq LIMIT $3 FOR UPDATE OF c`
	sqlTrackedCallerOfflineCalls = `SELECT ` + db.Prefixed("c.", db.CallColumns) + ` FROM calls c
		WHERE c.state = 'started' AND c.caller_tracked AND c.seq > $1 AND ` + noInviteeAccepted + `
		ORDER BY c.seq LIMIT $2 FOR UPDATE OF c`
)

// CallerOfflineCalls returns up to limit started calls of caller userID
// with seq > after in which no invitee has accepted, oldest first, with
// their users, the calls locked until the transaction ends.
func (t *callsTx) CallerOfflineCalls(ctx context.Context, userID string, after int64, limit int) ([]*calls.Call, error) {
	conn, ctx, err := t.p.ready(ctx)
	if err != nil {
		return nil, err
	}
	return queryCalls(ctx, conn, sqlCallerOfflineCalls, userID, after, limit)
}

// TrackedCallerOfflineCalls returns up to limit started, caller-tracked
// calls with seq > after in which no invitee has accepted, in seq order,
// locked as CallerOfflineCalls' are.
func (t *callsTx) TrackedCallerOfflineCalls(ctx context.Context, after int64, limit int) ([]*calls.Call, error) {
	conn, ctx, err := t.p.ready(ctx)
	if err != nil {
		return nil, err
	}
	return queryCalls(ctx, conn, sqlTrackedCallerOfflineCalls, after, limit)
}

// The busy check probes the partial index call_users_busy once per
// invitee. Its users are a VALUES list of a fixed length, not an array: a
// prepared statement's generic plan estimates an array parameter at ten
// elements, costs more than a custom plan for the one or two invitees of an
// invitation, and so PostgreSQL planned the statement afresh at about half
// its executions (0.37 ms each: 5 % of PostgreSQL's CPU in a cycle load,
// docs/benchmarks.md). With a fixed
// length the generic plan costs what the custom ones did and is kept. The
// LATERAL … LIMIT 1 keeps that plan a probe per user whatever the
// statistics, never a scan of every busy user.
const busyChunk = 16 // users per statement at most (an invitation has at most 9 invitees)

// busyQueries holds the busy check for 1, 2, 4, 8 and 16 users.
var busyQueries = func() map[int]string {
	qs := map[int]string{}
	for n := 1; n <= busyChunk; n *= 2 {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = fmt.Sprintf("($%d::text)", i+2)
		}
		qs[n] = `SELECT q.u FROM (VALUES ` + strings.Join(vals, ", ") + `) AS q(u)
	CROSS JOIN LATERAL (SELECT 1 FROM call_users u JOIN calls c ON c.seq = u.call_seq
		WHERE u.user_id = q.u AND u.busy AND c.id <> $1 LIMIT 1) AS b`
	}
	return qs
}()

// queueBusyUsers queues on b the busy check of users, in statements of
// busyQueries' lengths (the last user repeated to fill one), whose answers
// append to *busy, unsorted and possibly more than once per user.
func queueBusyUsers(b *pgx.Batch, users []string, exceptCallID string, busy *[]string) {
	for len(users) > 0 {
		chunk := users[:min(len(users), busyChunk)]
		users = users[len(chunk):]
		n := 1
		for n < len(chunk) {
			n *= 2
		}
		args := make([]any, 0, n+1)
		args = append(args, exceptCallID)
		for i := range n {
			args = append(args, chunk[min(i, len(chunk)-1)])
		}
		b.Queue(busyQueries[n], args...).Query(appendColumn(busy))
	}
}

// sqlStartedCalls counts a user's rows in call_users_busy, up to a limit.
const sqlStartedCalls = `SELECT count(*) FROM (SELECT 1 FROM call_users WHERE user_id = $1 AND busy LIMIT $2) s`

// StartedCalls counts the started calls userID is accepted in, up to
// limit. Called after BusyUsers found the user busy (calls.Service.Invite),
// seldom: a round trip of its own.
func (t *callsTx) StartedCalls(ctx context.Context, userID string, limit int) (int, error) {
	t.deferLocks([]string{userID})
	var n int
	b := &pgx.Batch{}
	b.Queue(sqlStartedCalls, userID, limit).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	if err := t.send(ctx, b); err != nil {
		return 0, fmt.Errorf("db: started calls of %s: %w", userID, err)
	}
	return n, nil
}

// BusyUsers returns those of userIDs accepted in a started call other than
// exceptCallID.
func (t *callsTx) BusyUsers(ctx context.Context, userIDs []string, exceptCallID string) ([]string, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	// A transaction writing one of them busy holds that user's
	// event_users row until it commits (Save, recipients). Taking the
	// rows first (send takes the deferred locks before the query) makes
	// this check wait for such a transaction and then read what it
	// committed, as SQLite's single writer would.
	t.deferLocks(userIDs)
	var busy []string
	b := &pgx.Batch{}
	queueBusyUsers(b, userIDs, exceptCallID, &busy)
	if err := t.send(ctx, b); err != nil {
		return nil, fmt.Errorf("db: busy users: %w", err)
	}
	slices.Sort(busy)
	return slices.Compact(busy), nil
}
