package sqlite

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"callsig/db"
)

// Column lists of the shared schema, read by db's scanners.
const (
	callColumns  = db.CallColumns
	userColumns  = db.UserColumns
	eventColumns = db.EventColumns
)

// callColumnsC is callColumns qualified for a query joining calls as c.
var callColumnsC = db.Prefixed("c.", callColumns)

// The hot statements, prepared once.
const (
	sqlSelectCallByID = `SELECT ` + callColumns + ` FROM calls WHERE id = ?`
	sqlSelectUsers    = `SELECT ` + userColumns + ` FROM call_users WHERE call_seq = ? ORDER BY ord`

	sqlInsertCall = `INSERT INTO calls (id, caller, mode, state, timeout, extended_data, create_time,
		end_time, end_reason, not_received_check, caller_tracked, caller_offline_at, presence_matters)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// The ID, caller and creation time never change; the rest is written
	// whole, which costs the same to SQLite as writing the changed columns.
	// The row is matched by id and the seq the call was read with: a call
	// carrying another call's seq (a defect) changes no row and fails,
	// rather than its users being written under that other call.
	sqlUpdateCall = `UPDATE calls SET mode = ?, state = ?, timeout = ?, extended_data = ?,
		end_time = ?, end_reason = ?, not_received_check = ?, caller_tracked = ?, caller_offline_at = ?,
		presence_matters = ?
		WHERE id = ? AND seq = ?`
	// sqlUpdateCallSeq is sqlUpdateCall for a call whose seq is not known.
	sqlUpdateCallSeq = `UPDATE calls SET mode = ?, state = ?, timeout = ?, extended_data = ?,
		end_time = ?, end_reason = ?, not_received_check = ?, caller_tracked = ?, caller_offline_at = ?,
		presence_matters = ?
		WHERE id = ? RETURNING seq`
	sqlUpsertUser = sqlUpsertUserInto + sqlUpsertUserRow + sqlUpsertUserSet
	// userRowArgs is how many arguments a row of sqlUpsertUser takes.
	userRowArgs       = 14
	sqlUpsertUserInto = `INSERT INTO call_users (call_seq, user_id, ord, state, inviter, extended_data,
		update_time, invite_time, accept_time, timeout_at, not_received_at, main_device,
		missed_time, busy)
		VALUES `
	sqlUpsertUserRow = `(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	sqlUpsertUserSet = `
		ON CONFLICT (call_seq, user_id) DO UPDATE SET ord = excluded.ord, state = excluded.state,
		inviter = excluded.inviter, extended_data = excluded.extended_data,
		update_time = excluded.update_time, invite_time = excluded.invite_time,
		accept_time = excluded.accept_time, timeout_at = excluded.timeout_at,
		not_received_at = excluded.not_received_at, main_device = excluded.main_device,
		missed_time = excluded.missed_time, busy = excluded.busy`
	// A call that ended frees all its users at once (migration 0005): the
	// rows of users accepted until then are not dirty, End leaves states as
	// they are. Only rows still busy are touched, through the primary key.
	sqlClearBusy = `UPDATE call_users SET busy = 0 WHERE call_seq = ? AND busy = 1`
	// OR FAIL: a statement that writes several rows and may abort on a
	// constraint has SQLite copy every page it first touches to a statement
	// journal, to undo its own earlier rows; a few % of the writer's CPU
	// with the events' multi-row INSERT (docs/benchmarks.md). With FAIL it
	// keeps them, and the request they belong to fails after writing: its
	// savepoint, or the replay of its batch (writer.go), undoes them. An
	// I/O error or a full disk then rolls back the whole transaction,
	// which the writer sees (txEnded).
	sqlInsertEvent = `INSERT OR FAIL INTO events (user_id, device, call_id, type, data, time)
		VALUES (?, ?, ?, ?, ?, ?)`
	// maxEventRows is how many events one INSERT writes (see InsertEvents),
	// each count its own prepared statement.
	maxEventRows = 4
	// wideRows is how many users or events one INSERT of a claim's
	// deferred rows writes (see deferredRows).
	wideRows = 16
	// The invitee's row remembers its newest invitation event, so a stream
	// finds the pending invitations without searching the log (see
	// migration 0002 and Store.PendingInvitations).
	sqlSetInvitation = `UPDATE call_users SET invitation_event_id = ? WHERE call_seq = ? AND user_id = ?`
	sqlInsertMessage = `INSERT INTO webhook_messages (msg_id, type, call_id, payload, created_at)
		VALUES (?, ?, ?, ?, ?) RETURNING id`
	// One outbox row per enabled, live endpoint subscribed to the type:
	// event_types is ",a,b," (or '' for all), so ",type," matches exactly one
	// whole entry and never a prefix of another.
	// Whether any endpoint would get a message of a type: most servers run
	// without webhooks, and a message nobody is subscribed to is never sent,
	// so it is not stored at all (a third of a call's write work otherwise).
	sqlSubscribed = `SELECT EXISTS (SELECT 1 FROM webhook_endpoints
		WHERE enabled = 1 AND deleted = 0 AND (event_types = '' OR instr(event_types, ',' || ? || ',') > 0))`
	sqlFanOut = `INSERT INTO webhook_deliveries (message_id, endpoint_id, status, next_attempt_at, created_at)
		SELECT ?, id, 'pending', ?, ? FROM webhook_endpoints
		WHERE enabled = 1 AND deleted = 0 AND (event_types = '' OR instr(event_types, ',' || ? || ',') > 0)`
)

// upsertUserRows is sqlUpsertUser for n rows.
func upsertUserRows(n int) string {
	return sqlUpsertUserInto + strings.Repeat(sqlUpsertUserRow+", ", n-1) + sqlUpsertUserRow + sqlUpsertUserSet
}

// writeStatements are prepared on the single writer connection and bound to
// each batch's transaction with txStmt.
type writeStatements struct {
	savepoint, release, rollbackTo, lastEventID *sqlx.Stmt

	selectCallByID, selectUsers *sqlx.Stmt
	insertCall, updateCall      *sqlx.Stmt
	updateCallSeq               *sqlx.Stmt
	upsertUser                  *sqlx.Stmt
	upsertUsers                 [maxEventRows]*sqlx.Stmt // [n-1] upserts n rows (a claim's, deferredRows)
	insertEvents                [maxEventRows]*sqlx.Stmt // [n-1] inserts n rows
	wideEvents, wideUsers       *sqlx.Stmt               // wideRows rows each
	setInvitation, clearBusy    *sqlx.Stmt
	insertMessage, fanOut       *sqlx.Stmt
	subscribed, busyUsers       *sqlx.Stmt
	userBusy                    *sqlx.Stmt
	startedCalls                *sqlx.Stmt
	twoBusy                     *sqlx.Stmt
	callsByID, usersOfCalls     *sqlx.Stmt // a claim's calls (callsTx.Calls)
	dueDeadlines                *sqlx.Stmt // UpdateDue's claim

	selectIdempotency, upsertIdempotency *sqlx.Stmt

	// dispatcher holds the webhook dispatcher's writes (see
	// Store.preparedWrite), by their text.
	dispatcher map[string]*sqlx.Stmt
}

func prepareWrite(ctx context.Context, wdb *sqlx.DB) (*writeStatements, error) {
	st := &writeStatements{}
	p := preparer{ctx: ctx, db: wdb}
	// One savepoint name is enough: savepoints never nest here, each request
	// releases its own before the next one starts.
	st.savepoint = p.prepare("SAVEPOINT request")
	st.release = p.prepare("RELEASE request")
	st.rollbackTo = p.prepare("ROLLBACK TO request")
	st.lastEventID = p.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
	st.selectCallByID = p.prepare(sqlSelectCallByID)
	st.selectUsers = p.prepare(sqlSelectUsers)
	st.insertCall = p.prepare(sqlInsertCall)
	st.updateCall = p.prepare(sqlUpdateCall)
	st.updateCallSeq = p.prepare(sqlUpdateCallSeq)
	st.upsertUser = p.prepare(sqlUpsertUser)
	st.upsertUsers[0] = st.upsertUser
	for n := 2; n <= maxEventRows; n++ {
		st.upsertUsers[n-1] = p.prepare(upsertUserRows(n))
	}
	for n := range maxEventRows {
		st.insertEvents[n] = p.prepare(sqlInsertEvent + strings.Repeat(", (?, ?, ?, ?, ?, ?)", n))
	}
	st.wideEvents = p.prepare(sqlInsertEvent + strings.Repeat(", (?, ?, ?, ?, ?, ?)", wideRows-1))
	st.wideUsers = p.prepare(upsertUserRows(wideRows))
	st.setInvitation = p.prepare(sqlSetInvitation)
	st.clearBusy = p.prepare(sqlClearBusy)
	st.insertMessage = p.prepare(sqlInsertMessage)
	st.fanOut = p.prepare(sqlFanOut)
	st.subscribed = p.prepare(sqlSubscribed)
	st.busyUsers = p.prepare(sqlBusyUsers)
	st.userBusy = p.prepare(sqlUserBusy)
	st.startedCalls = p.prepare(sqlStartedCalls)
	st.twoBusy = p.prepare(sqlTwoBusy)
	st.callsByID = p.prepare(sqlCallsByID)
	st.usersOfCalls = p.prepare(sqlUsersOfCalls)
	st.dueDeadlines = p.prepare(sqlDueDeadlines)
	st.selectIdempotency = p.prepare(selectIdempotency)
	st.upsertIdempotency = p.prepare(upsertIdempotency)
	writes, _ := db.DispatcherStatements(webhookSQL)
	st.dispatcher = p.prepareAll(writes)
	if p.err != nil {
		st.close()
		return nil, p.err
	}
	return st, nil
}

func (st *writeStatements) close() {
	if st == nil {
		return
	}
	closeAll(st.insertEvents[:]...)
	closeAll(st.wideEvents, st.wideUsers)
	closeAll(st.upsertUsers[1:]...) // [0] is upsertUser
	closeAll(st.savepoint, st.release, st.rollbackTo, st.lastEventID, st.selectCallByID, st.selectUsers,
		st.insertCall, st.updateCall, st.updateCallSeq, st.upsertUser, st.setInvitation, st.clearBusy, st.insertMessage, st.fanOut, st.subscribed, st.busyUsers, st.userBusy, st.startedCalls, st.twoBusy,
		st.callsByID, st.usersOfCalls, st.dueDeadlines,
		st.selectIdempotency, st.upsertIdempotency)
	closeAll(slices.Collect(maps.Values(st.dispatcher))...)
}

// readStatements are prepared on the read pool; database/sql prepares each
// again on every pooled connection it is first used on.
type readStatements struct {
	selectCallByID, selectUsers, selectIdempotency *sqlx.Stmt

	// dispatcher holds the webhook dispatcher's reads (see
	// Store.preparedRead), eventLog the event log's (eventReads),
	// by their text.
	dispatcher, eventLog map[string]*sqlx.Stmt
}

// prepareRead prepares the hot reads, with logQueries, the event log's
// (db.EventLog.Queries).
func prepareRead(ctx context.Context, rdb *sqlx.DB, logQueries []string) (*readStatements, error) {
	p := preparer{ctx: ctx, db: rdb}
	st := &readStatements{
		selectCallByID:    p.prepare(sqlSelectCallByID),
		selectUsers:       p.prepare(sqlSelectUsers),
		selectIdempotency: p.prepare(selectIdempotency),
	}
	_, reads := db.DispatcherStatements(webhookSQL)
	st.dispatcher = p.prepareAll(reads)
	st.eventLog = p.prepareAll(logQueries)
	if p.err != nil {
		st.close()
		return nil, p.err
	}
	return st, nil
}

func (st *readStatements) close() {
	if st == nil {
		return
	}
	closeAll(st.selectCallByID, st.selectUsers, st.selectIdempotency)
	closeAll(slices.Collect(maps.Values(st.dispatcher))...)
	closeAll(slices.Collect(maps.Values(st.eventLog))...)
}

// preparer prepares statements until the first error.
type preparer struct {
	ctx context.Context
	db  *sqlx.DB
	err error
}

func (p *preparer) prepare(query string) *sqlx.Stmt {
	if p.err != nil {
		return nil
	}
	st, err := p.db.PreparexContext(p.ctx, query)
	if err != nil {
		p.err = fmt.Errorf("db: prepare %q: %w", query, err)
	}
	return st
}

// prepareAll prepares queries, keyed by their text.
func (p *preparer) prepareAll(queries []string) map[string]*sqlx.Stmt {
	m := make(map[string]*sqlx.Stmt, len(queries))
	for _, q := range queries {
		if _, ok := m[q]; !ok {
			m[q] = p.prepare(q)
		}
	}
	return m
}

// closeAll closes statements, ignoring errors: closing one only frees memory.
func closeAll(stmts ...*sqlx.Stmt) {
	for _, st := range stmts {
		if st != nil {
			_ = st.Close()
		}
	}
}
