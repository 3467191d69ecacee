package testkit

import (
	"context"
	"encoding/json"
	"net/http"

	"callsig/calls"
)

// Call is a decoded CallInfo.
type Call = calls.CallInfo

// Invite starts a call from c to invitees with extra body fields and
// returns the 201 answer.
func (c *Client) Invite(body map[string]any, invitees ...string) calls.InviteResult {
	c.s.T.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["invitees"] = invitees
	var res calls.InviteResult
	c.Post("/calls", body).Want(http.StatusCreated).JSON(&res)
	return res
}

// Action posts /calls/{id}/{action} with body and returns the response.
func (c *Client) Action(callID, action string, body any) *Response {
	c.s.T.Helper()
	return c.Post("/calls/"+callID+"/"+action, body)
}

// GetCall fetches a call the client's user is in.
func (c *Client) GetCall(callID string) Call {
	c.s.T.Helper()
	var info Call
	c.Get("/calls/" + callID).Want(http.StatusOK).JSON(&info)
	return info
}

// UserState returns user's state in a CallInfo ("" when absent).
func UserState(info Call, user string) calls.UserState {
	for _, u := range info.CallUserList {
		if u.UserID == user {
			return u.State
		}
	}
	return ""
}

// LoggedEvent is one event read back from the event log.
type LoggedEvent struct {
	calls.Event
	Fields map[string]any
}

// Log reads the event log of user straight from the database: what the
// server committed, whatever delivery did with it.
func (s *Server) Log(user string) []LoggedEvent {
	s.T.Helper()
	evs, err := s.App.Store.EventsAfter(context.Background(), user, 0, 10000)
	if err != nil {
		s.T.Fatalf("read event log of %s: %v", user, err)
	}
	out := make([]LoggedEvent, len(evs))
	for i, e := range evs {
		out[i].Event = e
		if err := json.Unmarshal(e.Data, &out[i].Fields); err != nil {
			s.T.Fatalf("event %d data %s: %v", e.ID, e.Data, err)
		}
	}
	return out
}

// Types lists the event types of a log, in order, for one call.
func Types(log []LoggedEvent, callID string) []calls.EventType {
	var ts []calls.EventType
	for _, e := range log {
		if e.CallID == callID {
			ts = append(ts, e.Type)
		}
	}
	return ts
}

// Fatalf helper so story tests can fail through the kit.
func (s *Server) Fatalf(format string, args ...any) { s.T.Helper(); s.T.Fatalf(format, args...) }
