package sqlite

import (
	"encoding/json"

	"callsig/calls"
)

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// scanCall reads callColumns. Rows are scanned by hand rather than with
// sqlx's reflection: these run on every request.
func scanCall(sc scanner) (*calls.Call, error) {
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

// scanUser reads lead (columns selected before them) then userColumns. The
// user comes back clean (Dirty() false).
func scanUser(sc scanner, lead ...any) (*calls.CallUser, error) {
	var u calls.CallUser
	var state string
	err := sc.Scan(append(lead, &u.UserID, &state, &u.Inviter, &u.ExtendedData, &u.UpdateTime,
		&u.InviteTime, &u.AcceptTime, &u.TimeoutAt, &u.NotReceivedAt, &u.MainDevice)...)
	if err != nil {
		return nil, err
	}
	u.State = calls.UserState(state)
	return &u, nil
}

// scanEvent reads eventColumns.
func scanEvent(sc scanner) (calls.Event, error) {
	var e calls.Event
	var typ string
	var data []byte
	if err := sc.Scan(&e.ID, &e.UserID, &e.Device, &e.CallID, &typ, &data, &e.Time); err != nil {
		return e, err
	}
	e.Type, e.Data = calls.EventType(typ), json.RawMessage(data)
	return e, nil
}

// boolInt stores a bool as SQLite's 0/1.
func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
