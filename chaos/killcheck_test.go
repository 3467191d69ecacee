package chaos

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The checks read three records of the run: the history (every request
// and its answer), the final calls (GET /calls of every user once nothing
// changes any more) and every user's stream read from id 0.

const (
	evCreated  = "callInvitationCreated"
	evReceived = "callInvitationReceived"
	evCancel   = "callInvitationCancelled"
	evTimeout  = "callInvitationTimeout"
	evEnded    = "callInvitationEnded"
	evChanged  = "callUserStateChanged"
)

func activeState(s string) bool {
	return s == "inviting" || s == "received" || s == "notYetReceived" || s == "accepted"
}

// callLog is user's events of callID, in stream order.
func (f *kFinal) callLog(user, callID string) []kEvent {
	if f.byCall == nil {
		f.byCall = map[string]map[string][]kEvent{}
		for u, log := range f.logs {
			m := map[string][]kEvent{}
			for _, e := range log {
				m[e.data.CallID] = append(m[e.data.CallID], e)
			}
			f.byCall[u] = m
		}
	}
	return f.byCall[user][callID]
}

// changeOf finds in user's log the callUserStateChanged of callID that
// shows who in state, stamped within [lo, hi].
func (f *kFinal) changeOf(user, callID, who, state string, lo, hi int64) (kEvent, bool) {
	for _, e := range f.callLog(user, callID) {
		if e.typ != evChanged {
			continue
		}
		for _, u := range e.data.CallUserList {
			if u.UserID == who && u.State == state && u.UpdateTime >= lo && u.UpdateTime <= hi {
				return e, true
			}
		}
	}
	return kEvent{}, false
}

// movedOn reports whether who's own log shows who's state changing again
// in callID after the event with id after.
func (f *kFinal) movedOn(who, callID string, after int64) bool {
	for _, e := range f.callLog(who, callID) {
		if e.id <= after || e.typ != evChanged {
			continue
		}
		for _, u := range e.data.CallUserList {
			if u.UserID == who {
				return true
			}
		}
	}
	return false
}

func (f *kFinal) finalState(callID, who string) string {
	call := f.calls[callID]
	if call == nil {
		return "(no such call)"
	}
	if u := call.user(who); u != nil {
		return u.State
	}
	return "(not in the call)"
}

// checkAcknowledged: every request answered 2xx is in the log (the event
// that records it, stamped between sending the request and reading the
// answer) and in the final state, unless the log shows a later change.
func (f *kFinal) checkAcknowledged(t *testing.T) {
	var bad []string
	fail := func(r *killRecord, format string, args ...any) {
		bad = append(bad, fmt.Sprintf("%s: %s", r, fmt.Sprintf(format, args...)))
	}
	// wantChange: who's acknowledged move to state is in logUser's log and
	// is who's final state unless who's log shows it moving on.
	wantChange := func(r *killRecord, logUser, who, state string) bool {
		lo, hi := r.window()
		e, ok := f.changeOf(logUser, r.callID, who, state, lo, hi)
		if !ok {
			return false
		}
		if got := f.finalState(r.callID, who); !f.movedOn(who, r.callID, e.id) && got != state {
			fail(r, "%s is %s at the end though the log shows no change after it became %s (event %d)", who, got, state, e.id)
		}
		return true
	}
	checked := map[string]int{}
	for _, r := range f.history {
		if !r.ok() {
			continue
		}
		checked[r.op]++
		switch r.op {
		case "join":
			// A user already in the call (the caller, say) who joins moves
			// its main device to this one: no state change, and its
			// updateTime stays that of its acceptance.
			var res kCall
			_ = json.Unmarshal(r.resp, &res)
			lo, _ := r.window()
			if me := res.user(r.actor); me != nil && me.UpdateTime < lo {
				if _, ok := f.changeOf(r.actor, r.callID, r.actor, "accepted", me.UpdateTime, me.UpdateTime); !ok {
					fail(r, "a join that switched %s's main device: no callUserStateChanged in their log shows them accepted at %d", r.actor, me.UpdateTime)
				}
				checked["join (device switch)"]++
				continue
			}
			if !wantChange(r, r.actor, r.actor, "accepted") {
				fail(r, "no callUserStateChanged in %s's log shows them accepted within the request", r.actor)
			}
		case "accept", "reject", "quit":
			state := map[string]string{"accept": "accepted", "reject": "rejected", "quit": "quit"}[r.op]
			if !wantChange(r, r.actor, r.actor, state) {
				fail(r, "no callUserStateChanged in %s's log shows them %s within the request", r.actor, state)
			}
		case "cancel":
			// Which invitations an empty list cancelled the answer does not
			// say; each cancelled user hears of its own change.
			found := false
			if call := f.calls[r.callID]; call != nil {
				for _, u := range call.CallUserList {
					found = wantChange(r, u.UserID, u.UserID, "cancelled") || found
				}
			}
			if !found {
				fail(r, "no user's log shows an invitation cancelled within the request")
			}
		case "invite":
			var res kCreated
			if json.Unmarshal(r.resp, &res) != nil || res.CallID != r.callID {
				fail(r, "a 200 to invite must be {callID, errorUserList}")
				continue
			}
			var in struct{ Invitees []string }
			_ = json.Unmarshal(r.body, &in)
			for _, v := range in.Invitees {
				if slices.ContainsFunc(res.ErrorUserList, func(e struct {
					UserID string `json:"userID"`
					Reason string `json:"reason"`
				}) bool {
					return e.UserID == v
				}) {
					continue
				}
				if !wantChange(r, v, v, "inviting") {
					fail(r, "%s's log shows no new invitation within the request", v)
				}
			}
		case "end":
			lo, hi := r.window()
			found := false
			for _, e := range f.callLog(r.actor, r.callID) {
				if e.typ == evEnded && e.data.OperatedUserID == r.actor && e.data.EndTime >= lo && e.data.EndTime <= hi {
					found = true
					if call := f.calls[r.callID]; call == nil || call.State != "ended" || call.EndTime != e.data.EndTime {
						fail(r, "the call is not ended at %d at the end: %+v", e.data.EndTime, call)
					}
				}
			}
			if !found {
				fail(r, "no callInvitationEnded by %s within the request in their log", r.actor)
			}
		}
	}
	creates := 0
	for _, cr := range f.l.order {
		if cr.answer == nil || cr.answer.status != 201 {
			continue
		}
		creates++
		r := cr.answer
		call := f.calls[cr.callID]
		if call == nil {
			fail(r, "acknowledged call %s does not exist at the end", cr.callID)
			continue
		}
		if call.ExtendedData != cr.marker || call.Caller != cr.caller {
			fail(r, "call %s has caller %s and extendedData %q, want %s and %q", cr.callID, call.Caller, call.ExtendedData, cr.caller, cr.marker)
		}
		if n := countType(f.callLog(cr.caller, cr.callID), evCreated); n != 1 {
			fail(r, "%d callInvitationCreated for %s in the caller's log, want 1", n, cr.callID)
		}
		var res kCreated
		_ = json.Unmarshal(r.resp, &res)
		for _, u := range res.Call.CallUserList {
			if u.UserID == cr.caller {
				continue
			}
			if f.callLog(u.UserID, cr.callID) == nil || countType(f.callLog(u.UserID, cr.callID), evReceived) == 0 {
				fail(r, "invitee %s has no callInvitationReceived for %s", u.UserID, cr.callID)
			}
		}
	}
	t.Logf("acknowledged requests checked: %d creates, %v", creates, checked)
	report(t, "acknowledged requests not in the final state or the log", bad)
}

func countType(log []kEvent, typ string) int {
	n := 0
	for _, e := range log {
		if e.typ == typ {
			n++
		}
	}
	return n
}

// checkIdempotent: each Idempotency-Key made at most one call; a POST
// /calls retried with its key after a crash got an answer (a replay of the
// first one, or the request run now) and made exactly one call.
func (f *kFinal) checkIdempotent(t *testing.T) {
	byMarker := map[string][]string{}
	for id, call := range f.calls {
		if strings.HasPrefix(call.ExtendedData, "marker:") {
			byMarker[call.ExtendedData] = append(byMarker[call.ExtendedData], id)
		}
	}
	var bad []string
	var retried, answered, replayed, stuck, stuckApplied, dups, dupsRetried int
	for _, cr := range f.l.order {
		ids := byMarker[cr.marker]
		if len(ids) > 1 {
			dups++
			if cr.retried {
				dupsRetried++
			}
			bad = append(bad, fmt.Sprintf("key %s (retried: %v, %d attempts) made %d calls: %v", cr.key, cr.retried, len(cr.attempts), len(ids), ids))
		}
		if cr.retried {
			retried++
			switch {
			case cr.answer == nil:
				stuck++
				if len(ids) > 0 {
					stuckApplied++
				}
			case cr.answer.status == 201:
				answered++
				if cr.answer.replayed {
					replayed++
				}
			}
		}
		if cr.answer == nil {
			continue
		}
		switch {
		case cr.answer.status == 201 && (len(ids) != 1 || ids[0] != cr.callID):
			bad = append(bad, fmt.Sprintf("key %s answered 201 with call %s, but the calls with its marker are %v", cr.key, cr.callID, ids))
		case cr.answer.status != 201 && len(ids) > 0:
			bad = append(bad, fmt.Sprintf("key %s answered %d, but made calls %v", cr.key, cr.answer.status, ids))
		}
	}
	t.Logf("POST /calls: %d keys; %d retried after no answer or a 5xx: %d answered 201 (%d of them replayed), %d never answered (%d of those had made their call); %d keys made more than one call (%d of them retried)",
		len(f.l.order), retried, answered, replayed, stuck, stuckApplied, dups, dupsRetried)
	if stuck > 0 {
		var keys []string
		for _, cr := range f.l.order {
			if cr.retried && cr.answer == nil {
				last := cr.attempts[len(cr.attempts)-1]
				keys = append(keys, fmt.Sprintf("%s (%d attempts, last %d %s, %s after the last restart; its call exists: %v)",
					cr.key, len(cr.attempts), last.status, problemCode(last.resp), last.sent.Sub(f.down[len(f.down)-1].readyAt).Round(time.Millisecond), len(byMarker[cr.marker]) > 0))
			}
		}
		bad = append(bad, fmt.Sprintf("%d of %d POST /calls retried with their Idempotency-Key after a crash never got an answer (%d of them had already made their call: the crash lost the answer, and once the key's in-flight lease expires a retry makes a second call):\n    %s",
			stuck, retried, stuckApplied, strings.Join(keys, "\n    ")))
	}
	report(t, "Idempotency-Key across crashes", bad)
}

// lateSlack bounds how late a deadline may fire after it fell due, or
// after the restart for one due while the server was down. The timer
// fires within milliseconds; the rest is room for a loaded CI machine.
const lateSlack = 2 * time.Second

// checkDeadlines: every one-second invitation (nobody answers them) timed
// out with exactly one callInvitationTimeout, within lateSlack of its due
// time (or of the restart, for those that fell due while the service was
// down; a cluster node's death is no excuse); and no invitation timed out
// twice.
func (f *kFinal) checkDeadlines(t *testing.T) {
	var bad []string
	total, whileDown, whileNodeDown := 0, 0, 0
	for id, call := range f.calls {
		if call.Caller != f.l.deadlineCaller {
			continue
		}
		total++
		due := time.UnixMilli(call.CreateTime + int64(call.Timeout)*1000)
		for _, d := range f.down {
			if !due.Before(d.killAt) && due.Before(d.readyAt) {
				whileDown++
				break
			}
		}
		for _, d := range f.nodeDown {
			if !due.Before(d.killAt) && due.Before(d.readyAt) {
				whileNodeDown++
				break
			}
		}
		// It fires within lateSlack of falling due, or of the restart when
		// the service was down at any time in that span. A cluster node's
		// death extends nothing: another node fires it.
		limit := due.Add(lateSlack)
		for _, d := range f.down {
			if due.Before(d.readyAt) && limit.After(d.killAt) {
				limit = d.readyAt.Add(lateSlack)
			}
		}
		for _, u := range call.CallUserList {
			if u.UserID == call.Caller {
				continue
			}
			n := countType(f.callLog(u.UserID, id), evTimeout)
			if u.State != "timeout" || call.State != "ended" || n != 1 {
				bad = append(bad, fmt.Sprintf("deadline call %s (due %s): %s is %s, call %s, %d callInvitationTimeout events, want timeout, ended, 1",
					id, due.Format("15:04:05.000"), u.UserID, u.State, call.State, n))
			}
			if fired := time.UnixMilli(u.UpdateTime); u.State == "timeout" && fired.After(limit) {
				bad = append(bad, fmt.Sprintf("deadline call %s (due %s): %s timed out at %s, after %s",
					id, due.Format("15:04:05.000"), u.UserID, fired.Format("15:04:05.000"), limit.Format("15:04:05.000")))
			}
		}
	}
	// Any invitation, not only these: at most one timeout per invitation.
	for _, u := range f.users {
		perCall := map[string][2]int{}
		for _, e := range f.logs[u] {
			c := perCall[e.data.CallID]
			switch e.typ {
			case evReceived:
				c[0]++
			case evTimeout:
				c[1]++
			}
			perCall[e.data.CallID] = c
		}
		for id, c := range perCall {
			if c[1] > c[0] {
				bad = append(bad, fmt.Sprintf("%s: %d callInvitationTimeout for call %s after %d invitations", u, c[1], id, c[0]))
			}
		}
	}
	t.Logf("%d deadline calls, %d of them due while the service was down (%d crashes), %d while one node was (%d crashes)",
		total, whileDown, len(f.down), whileNodeDown, len(f.nodeDown))
	if whileDown == 0 {
		bad = append(bad, "no deadline fell due while the service was down: the run did not exercise it")
	}
	if len(f.nodeDown) > 0 && whileNodeDown == 0 {
		bad = append(bad, "no deadline fell due while a node was down: the run did not exercise it")
	}
	report(t, "deadlines", bad)
}

// report fails t with the first problems found and how many there were.
func report(t *testing.T, what string, bad []string) {
	t.Helper()
	if len(bad) == 0 {
		return
	}
	shown := bad[:min(len(bad), 20)]
	t.Errorf("%s: %d problems:\n  %s", what, len(bad), strings.Join(shown, "\n  "))
}
