package db

import (
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"

	"callsig/calls"
	"callsig/webhooks"
)

// The row mapping of the schema every backend keeps: the same tables and
// columns (see each backend's migrations), so the column lists and the
// scanners are shared. Rows are scanned by hand rather than with sqlx's
// reflection: these run on every request.

// Column lists, in the order the scanners read them. call_users.missed_time
// is calls.CallUser.MissedTime: since 0ead6cf, when the user's call.missed
// was settled (produced, or made moot by an answer), not only when it was
// produced, as the first migrations' comments say.
const (
	CallColumns = `seq, id, caller, mode, state, timeout, extended_data, create_time,
		end_time, end_reason, not_received_check, caller_tracked, caller_offline_at`
	UserColumns = `user_id, state, inviter, extended_data, update_time, invite_time,
		accept_time, timeout_at, not_received_at, main_device, missed_time`
	EventColumns    = `id, user_id, device, call_id, type, data, time`
	EndpointColumns = `id, url, secret, event_types, description, created_at, enabled, disabled_reason`
	// DeliveryColumns are read from webhook_deliveries d joined with
	// webhook_messages m.
	DeliveryColumns = `d.id, d.endpoint_id, m.type, d.status, d.attempts, d.last_status_code,
	d.last_error, d.next_attempt_at, d.created_at, d.delivered_at`
)

// Prefixed qualifies each column of a column list, e.g. for a query joining
// calls as c.
func Prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// Scanner is a *sql.Row or *sql.Rows.
type Scanner interface {
	Scan(dest ...any) error
}

// ScanRows reads every row of rows with scan, then closes rows: the one
// loop behind every multi-row query of every backend. No rows is an empty,
// non-nil list (it encodes as [], not null).
func ScanRows[T any](rows *sql.Rows, scan func(Scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	list := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return list, nil
}

// ScanDeadline reads a due deadline: call ID, user ID, kind, time.
func ScanDeadline(sc Scanner) (calls.Deadline, error) {
	var d calls.Deadline
	var kind string
	err := sc.Scan(&d.CallID, &d.UserID, &kind, &d.At)
	d.Kind = calls.DeadlineKind(kind)
	return d, err
}

// ScanCall reads CallColumns.
func ScanCall(sc Scanner) (*calls.Call, error) {
	var c calls.Call
	var mode, state, reason string
	err := sc.Scan(&c.Seq, &c.ID, &c.Caller, &mode, &state, &c.Timeout, &c.ExtendedData,
		&c.CreateTime, &c.EndTime, &reason, &c.NotReceivedCheck, &c.CallerTracked, &c.CallerOfflineAt)
	if err != nil {
		return nil, err
	}
	c.Mode, c.State, c.EndReason = calls.Mode(mode), calls.CallState(state), calls.EndReason(reason)
	return &c, nil
}

// ScanUser reads lead (columns selected before them) then UserColumns. The
// user comes back clean (Dirty() false).
func ScanUser(sc Scanner, lead ...any) (*calls.CallUser, error) {
	var u calls.CallUser
	var state string
	err := sc.Scan(append(lead, &u.UserID, &state, &u.Inviter, &u.ExtendedData, &u.UpdateTime,
		&u.InviteTime, &u.AcceptTime, &u.TimeoutAt, &u.NotReceivedAt, &u.MainDevice, &u.MissedTime)...)
	if err != nil {
		return nil, err
	}
	u.State = calls.UserState(state)
	return &u, nil
}

// ScanEvent reads EventColumns.
func ScanEvent(sc Scanner) (calls.Event, error) {
	var e calls.Event
	var typ string
	var data []byte
	if err := sc.Scan(&e.ID, &e.UserID, &e.Device, &e.CallID, &typ, &data, &e.Time); err != nil {
		return e, err
	}
	e.Type, e.Data = calls.EventType(typ), json.RawMessage(data)
	return e, nil
}

// ScanEndpoint reads EndpointColumns.
func ScanEndpoint(sc Scanner) (*webhooks.Endpoint, error) {
	var e webhooks.Endpoint
	var types string
	if err := sc.Scan(&e.ID, &e.URL, &e.Secret, &types, &e.Description, &e.CreatedAt, &e.Enabled, &e.DisabledReason); err != nil {
		return nil, err
	}
	e.EventTypes = DecodeEventTypes(types)
	return &e, nil
}

// ScanEndpointValue is ScanEndpoint for lists of endpoints (ScanRows).
func ScanEndpointValue(sc Scanner) (webhooks.Endpoint, error) {
	e, err := ScanEndpoint(sc)
	if err != nil {
		return webhooks.Endpoint{}, err
	}
	return *e, nil
}

// ScanDelivery reads DeliveryColumns.
func ScanDelivery(sc Scanner) (webhooks.Delivery, error) {
	var d webhooks.Delivery
	var id int64
	var typ, status string
	if err := sc.Scan(&id, &d.WebhookID, &typ, &status, &d.Attempts, &d.LastStatusCode,
		&d.LastError, &d.NextAttemptAt, &d.CreatedAt, &d.DeliveredAt); err != nil {
		return d, err
	}
	d.ID, d.Type, d.Status = strconv.FormatInt(id, 10), calls.HookType(typ), webhooks.DeliveryStatus(status)
	if d.Status != webhooks.DeliveryPending {
		d.NextAttemptAt = 0 // nothing is scheduled for a finished delivery
	}
	return d, nil
}

// EncodeEventTypes stores an endpoint's type filter as ",a,b," (see the
// schema), so ",type," matches exactly one whole entry and never a prefix
// of another; no types is the empty string, which subscribes to every type.
func EncodeEventTypes(types []calls.HookType) string {
	if len(types) == 0 {
		return ""
	}
	var b strings.Builder
	for _, t := range types {
		b.WriteString(",")
		b.WriteString(string(t))
	}
	b.WriteString(",")
	return b.String()
}

// DecodeEventTypes reads what EncodeEventTypes stored.
func DecodeEventTypes(s string) []calls.HookType {
	types := []calls.HookType{}
	for _, t := range strings.Split(strings.Trim(s, ","), ",") {
		if t != "" {
			types = append(types, calls.HookType(t))
		}
	}
	return types
}
