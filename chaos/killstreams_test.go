package chaos

import (
	"fmt"
	"strings"
	"testing"
)

// checkStreams: every user's stream read from id 0 has strictly increasing
// ids and no duplicate event, holds every event the live streams read
// (with the same id and data: nothing was delivered that a crash then
// lost), the live streams read every event it has up to the last they
// read (none was skipped, live or on resuming), and replaying each call's
// events reproduces the call as GET shows it.
func (f *kFinal) checkStreams(t *testing.T) {
	var bad []string
	fence := map[string]bool{}
	for _, id := range f.fences {
		fence[id] = true
	}
	replayed := 0
	for _, u := range f.users {
		log := f.logs[u]
		byID := map[int64]kEvent{}
		seen := map[string]int64{}
		calls := map[string]bool{}
		for i, e := range log {
			if i > 0 && e.id <= log[i-1].id {
				bad = append(bad, fmt.Sprintf("%s: id %d (%s) after id %d", u, e.id, e.typ, log[i-1].id))
			}
			byID[e.id] = e
			// Cancellations and timeouts may repeat word for word after a
			// re-invitation; every other event carries a time or a list that
			// makes it unique.
			if e.typ != evCancel && e.typ != evTimeout {
				k := e.typ + " " + e.raw
				if prev, dup := seen[k]; dup {
					bad = append(bad, fmt.Sprintf("%s: event %d repeats event %d: %s %s", u, e.id, prev, e.typ, e.raw))
				}
				seen[k] = e.id
			}
			if !fence[e.data.CallID] {
				calls[e.data.CallID] = true
			}
		}
		if lv := f.l.live[u]; lv != nil {
			for _, s := range lv.backwards {
				bad = append(bad, fmt.Sprintf("%s's live stream went backwards: %s", u, s))
			}
			read := map[int64]bool{}
			for _, e := range lv.events {
				read[e.id] = true
				if got, ok := byID[e.id]; !ok || got.typ != e.typ || got.raw != e.raw {
					bad = append(bad, fmt.Sprintf("%s's live stream read event %d %s %s, the log from id 0 has %q %s", u, e.id, e.typ, e.raw, got.typ, got.raw))
				}
			}
			// Each connection resumed from the last id the one before read,
			// so the live streams together read every event of the log up to
			// the last one they read: one missed is an event lost in delivery.
			if n := len(lv.events); n > 0 {
				last := lv.events[n-1].id
				for _, e := range log {
					if e.id <= last && !read[e.id] {
						bad = append(bad, fmt.Sprintf("%s's live streams, which read up to id %d, never read event %d %s %s", u, last, e.id, e.typ, e.raw))
					}
				}
			}
		}
		for id := range calls {
			replayed++
			bad = append(bad, f.replay(u, id)...)
		}
	}
	// Every user in a call has heard of it.
	for id, call := range f.calls {
		if fence[id] {
			continue
		}
		for _, u := range call.CallUserList {
			if len(f.callLog(u.UserID, id)) == 0 {
				bad = append(bad, fmt.Sprintf("%s is %s in call %s but its log has no event of it", u.UserID, u.State, id))
			}
		}
	}
	events, live := 0, 0
	for _, u := range f.users {
		events += len(f.logs[u])
		if lv := f.l.live[u]; lv != nil {
			live += len(lv.events)
		}
	}
	t.Logf("%d users' logs, %d events; %d live events matched; %d (user, call) replays", len(f.users), events, live, replayed)
	report(t, "event streams", bad)
}

// replay folds user's events of callID into the states they show and
// compares them with the call at the end: the user's own state always;
// every user's while the user has been in the call's audience since its
// last invitation (it heard of every change).
func (f *kFinal) replay(user, callID string) []string {
	type st struct {
		state string
		at    int64
	}
	call := f.calls[callID]
	if call == nil {
		return []string{fmt.Sprintf("%s's log has events of call %s, which no user lists", user, callID)}
	}
	states := map[string]st{}
	snapshot, inAudience, ended := false, false, int64(0)
	var trace []string
	for _, e := range f.callLog(user, callID) {
		trace = append(trace, fmt.Sprintf("%d %s %s", e.id, e.typ, e.raw))
		switch e.typ {
		case evCreated, evReceived:
			states = map[string]st{}
			for _, u := range e.data.CallUserList {
				states[u.UserID] = st{u.State, u.UpdateTime}
			}
			snapshot, inAudience = true, true
		case evChanged:
			for _, u := range e.data.CallUserList {
				states[u.UserID] = st{u.State, u.UpdateTime}
				if u.UserID == user && !activeState(u.State) {
					inAudience = false
				}
			}
		case evEnded:
			ended = e.data.EndTime
		}
	}
	var bad []string
	me := call.user(user)
	if me == nil {
		return []string{fmt.Sprintf("%s has events of call %s but is not in its list", user, callID)}
	}
	if got := states[user]; got.state != me.State || got.at != me.UpdateTime {
		bad = append(bad, fmt.Sprintf("%s's log replays %s in call %s as %s@%d, GET shows %s@%d", user, user, callID, got.state, got.at, me.State, me.UpdateTime))
	}
	if snapshot && inAudience {
		for _, u := range call.CallUserList {
			if got := states[u.UserID]; got.state != u.State || got.at != u.UpdateTime {
				bad = append(bad, fmt.Sprintf("%s's log replays %s in call %s as %s@%d, GET shows %s@%d", user, u.UserID, callID, got.state, got.at, u.State, u.UpdateTime))
			}
		}
	}
	if ended != 0 && (call.State != "ended" || call.EndTime != ended) {
		bad = append(bad, fmt.Sprintf("%s's log ends call %s at %d, GET shows %s at %d", user, callID, ended, call.State, call.EndTime))
	}
	if bad != nil {
		bad = append(bad, fmt.Sprintf("  %s's events of %s:\n    %s\n  GET: %+v", user, callID, strings.Join(trace, "\n    "), *call))
	}
	return bad
}
