package db

// The event log's reads, for every backend: the SSE replay, the pending
// invitations a stream opened without Last-Event-ID replays, and the
// recipients the hub asks for when it gives up waiting for ids.

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync/atomic"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
)

// The event log's statements, spelled alike in every dialect, with ?
// placeholders (EventLog rebinds them for its driver). The invitation
// queries walk call_users from the user's newest invitation (see each
// backend's index on invitation_event_id), so they read one index step,
// one call row and one event row per invitation returned, whatever the
// length of the user's history.
var (
	// EventsAfterSQL(user, after id, up to id, limit) is a stream's replay.
	EventsAfterSQL = `SELECT ` + EventColumns + ` FROM events
	WHERE user_id = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?`
	// PendingInvitationsSQL(user, limit) selects the newest invitation
	// events of a user's live invitations (at most limit of them). The
	// literal u.timeout_at > 0 is what lets SQLite use its partial index.
	PendingInvitationsSQL = `SELECT ` + eventColumnsE + ` FROM (
	SELECT u.invitation_event_id AS id FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = ? AND u.timeout_at > 0 AND u.state IN (` + pendingStates + `)
	AND c.state = 'started'
	ORDER BY u.invitation_event_id DESC LIMIT ?) p
	JOIN events e ON e.id = p.id`
	// UnreceivedInvitationsSQL(user, up to, limit) is PendingInvitationsSQL
	// for the live invitations with an event id up to a bound, among which
	// those whose invitee is still inviting or notYetReceived are returned.
	// Only the newest limit below the bound are looked at, so the read is
	// bounded whatever the number of invitations the user has.
	UnreceivedInvitationsSQL = `SELECT ` + eventColumnsE + ` FROM (
	SELECT u.invitation_event_id AS id, u.state AS state FROM call_users u JOIN calls c ON c.seq = u.call_seq
	WHERE u.user_id = ? AND u.timeout_at > 0 AND u.invitation_event_id <= ?
	AND c.state = 'started'
	ORDER BY u.invitation_event_id DESC LIMIT ?) p
	JOIN events e ON e.id = p.id
	WHERE p.state IN ('` + string(calls.StateInviting) + `', '` + string(calls.StateNotYetReceived) + `')`
	// EventRecipientsSQL(from id, to id, limit) reads a range of ids, in
	// id order: so SQLite walks the primary key over the range, whatever
	// its statistics. Asked for the distinct users alone, with the
	// statistics a production file carries (a user's events counted as
	// 2,001, see TestQueryPlansUnderProductionStatistics), it skip-scanned
	// events_by_user instead, a seek per user with events in the log: 20
	// ms for 12,400 such users where the range takes 0.1-0.3 ms.
	EventRecipientsSQL = `SELECT DISTINCT user_id FROM (
	SELECT user_id FROM events WHERE id BETWEEN ? AND ? ORDER BY id) r LIMIT ?`
	// PruneEventsSQL(before, limit) deletes one batch of the oldest events:
	// of the first limit by id, those before the first one at or after
	// before. What is kept is a suffix of the ids, as the streams' gap
	// check (OldestEventID) assumes: pruned by time alone, a newer id
	// whose time came earlier (taken before its write, or on a node whose
	// clock is behind) went while an older one stayed, and a client
	// resuming between them skipped it without a reset. An event older
	// than before stays while one before it in id order is not (seconds
	// of clock skew at most).
	PruneEventsSQL = `DELETE FROM events WHERE id IN (
	SELECT f.id FROM (
		SELECT id, MIN(CASE WHEN time >= ? THEN id END) OVER () AS stop
		FROM (SELECT id, time FROM events ORDER BY id LIMIT ?) x) f
	WHERE f.stop IS NULL OR f.id < f.stop)`

	// OldestEventIDSQL reads the smallest event id kept, 0 when none is.
	OldestEventIDSQL = `SELECT COALESCE(MIN(id), 0) FROM events`

	// eventColumnsE is EventColumns qualified for a query joining events
	// as e.
	eventColumnsE = Prefixed("e.", EventColumns)
	// pendingStates is the SQL list of the user states
	// calls.UserState.Pending accepts.
	pendingStates = `'` + string(calls.StateInviting) + `', '` + string(calls.StateReceived) + `', '` +
		string(calls.StateNotYetReceived) + `'`
)

// EventLog implements the reads of the event log (sse.Log) every backend
// shares; a backend embeds it and adds LastEventID and PruneEvents, which
// depend on how it gives out ids and runs writes.
type EventLog struct {
	pool   func() (sqlx.QueryerContext, error)
	failed func(error) error
	// visible, when set, is the highest id a stream may read: a backend
	// whose commits are visible before they are durable (SQLite's
	// pipelined fsync) keeps the newer ones from leaving the server.
	visible func() int64

	eventsAfter, pendingInvitations, unreceivedInvitations, eventRecipients, oldestEventID string
	// restores are the gaps of the restores the log went through (see
	// RestoreMarkType), read as the store opens (LoadRestores) and shared
	// by every copy of the log.
	restores *atomic.Pointer[[]restoreGap]
}

// NewEventLog returns the shared event log reads of a backend: bindType is
// its driver's placeholders (sqlx.QUESTION, sqlx.DOLLAR), pool gives what
// a read of one statement runs on (or why there is none: a closed store),
// and failed classifies a read's error (unavailable, closed).
func NewEventLog(bindType int, pool func() (sqlx.QueryerContext, error), failed func(error) error) EventLog {
	return EventLog{
		pool:                  pool,
		failed:                failed,
		eventsAfter:           sqlx.Rebind(bindType, EventsAfterSQL),
		pendingInvitations:    sqlx.Rebind(bindType, PendingInvitationsSQL),
		unreceivedInvitations: sqlx.Rebind(bindType, UnreceivedInvitationsSQL),
		eventRecipients:       sqlx.Rebind(bindType, EventRecipientsSQL),
		oldestEventID:         OldestEventIDSQL,
		restores:              new(atomic.Pointer[[]restoreGap]),
	}
}

// Queries returns the text of every query l runs, for a backend that
// prepares them ahead (sqlite: its driver parses a query's text on every
// run).
func (l EventLog) Queries() []string {
	return []string{l.eventsAfter, l.pendingInvitations, l.unreceivedInvitations, l.eventRecipients, l.oldestEventID}
}

// Visible returns l with its replays capped at what upTo returns.
func (l EventLog) Visible(upTo func() int64) EventLog {
	l.visible = upTo
	return l
}

// EventsAfter returns up to limit of userID's events with ID > afterID,
// oldest first: the replay of an SSE stream after its Last-Event-ID. Events
// addressed to one device are included; the stream filters by device.
func (l EventLog) EventsAfter(ctx context.Context, userID string, afterID int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	upTo := int64(math.MaxInt64)
	if l.visible != nil {
		upTo = l.visible()
	}
	return l.queryEvents(ctx, l.eventsAfter, userID, afterID, upTo, limit)
}

// PendingInvitations returns, for the newest limit started calls in which
// userID is still pending, the newest callInvitationReceived event
// addressed to it, in id order: what a stream opened without Last-Event-ID
// replays so an invitee that was offline still sees the invitations it can
// answer. limit <= 0 means 100.
func (l EventLog) PendingInvitations(ctx context.Context, userID string, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := l.queryEvents(ctx, l.pendingInvitations, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("db: pending invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

// UnreceivedInvitations returns the invitation events, with id <= upTo, of
// userID's invitations that are still pending in state inviting or
// notYetReceived, looking at the newest limit live invitations up to upTo
// only, in id order. A client that resumes after upTo has had those events:
// the SSE layer reports them delivered again (calls.Service.MarkDelivered is
// idempotent), so a report lost to a crash or a failed write is re-derived
// from the log and the client's own Last-Event-ID. limit <= 0 means 100.
func (l EventLog) UnreceivedInvitations(ctx context.Context, userID string, upTo int64, limit int) ([]calls.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	list, err := l.queryEvents(ctx, l.unreceivedInvitations, userID, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("db: unreceived invitations of %s: %w", userID, err)
	}
	sortByID(list)
	return list, nil
}

// sortByID puts events read through an index on another column in id order.
func sortByID(list []calls.Event) {
	slices.SortFunc(list, func(a, b calls.Event) int { return cmp.Compare(a.ID, b.ID) })
}

// EventRecipients returns the distinct users of the events with ids from
// fromID to toID, at most limit of them; more reports whether there may be
// others. The SSE hub reads it when it gives up waiting for ids it was never
// told of: only those users' streams must catch up from the log.
func (l EventLog) EventRecipients(ctx context.Context, fromID, toID int64, limit int) (users []string, more bool, err error) {
	q, err := l.pool()
	if err != nil {
		return nil, false, err
	}
	err = sqlx.SelectContext(ctx, q, &users, l.eventRecipients, fromID, toID, limit+1)
	if err != nil {
		return nil, false, l.failed(fmt.Errorf("db: recipients of events %d to %d: %w", fromID, toID, err))
	}
	if len(users) > limit {
		return users[:limit], true, nil
	}
	return users, false, nil
}

// OldestEventID returns the smallest event ID still in the log, 0 when the
// log is empty: a Last-Event-ID below it may have missed pruned events.
func (l EventLog) OldestEventID(ctx context.Context) (int64, error) {
	q, err := l.pool()
	if err != nil {
		return 0, err
	}
	var id int64
	if err := q.QueryRowxContext(ctx, l.oldestEventID).Scan(&id); err != nil {
		return 0, l.failed(fmt.Errorf("db: oldest event: %w", err))
	}
	return id, nil
}

// queryEvents runs a query selecting EventColumns.
func (l EventLog) queryEvents(ctx context.Context, query string, args ...any) ([]calls.Event, error) {
	q, err := l.pool()
	if err != nil {
		return nil, err
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, l.failed(fmt.Errorf("db: query events: %w", err))
	}
	list, err := ScanRows(rows, ScanEvent)
	if err != nil {
		return nil, l.failed(fmt.Errorf("db: query events: %w", err))
	}
	return list, nil
}
