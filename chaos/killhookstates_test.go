package chaos

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
)

// The webhooks of state changes and missed calls, derived from what the
// crashes cannot have lost: the users' streams read from id 0 (the event
// log, which the streams check ties to every acknowledged request and to
// the final state) and the calls as GET shows them at the end. The
// outbox is not consulted, so a message the server never queued (or
// queued twice) shows even though the outbox agrees with the receiver.

// kChange is one state a user of a call took: callUserStateChanged shows
// it in that user's own log (the changed users always get it), and
// exactly one call.user_state_changed lists it. A main-device switch
// repeats a state without changing it (same state, same updateTime): it
// has no webhook, and its key is the one of the state it repeats (a
// change's, or the caller's state in callInvitationCreated).
type kChange struct {
	callID, userID, state, inviter string
	at                             int64
}

func (c kChange) String() string {
	return fmt.Sprintf("%s %s@%d (invited by %s) in call %s", c.userID, c.state, c.at, c.inviter, c.callID)
}

func changeKey(callID string, u kUser) kChange {
	return kChange{callID: callID, userID: u.UserID, state: u.State, inviter: u.Inviter, at: u.UpdateTime}
}

// usersKey is a callUserList as it must appear in the webhook: the
// stream's event and the webhook carry the same data.
func usersKey(callID string, list []kUser) string {
	b, _ := json.Marshal(list)
	return callID + " " + string(b)
}

// kMissed is the call.missed a user of a call must get: its invitation
// ended while pending, before the user ever answered (accepted, joined or
// rejected) in the call, and no call.missed came before.
type kMissed struct {
	inviter string
	at      int64
	reasons []string
}

type kMissedData struct {
	CallID  string `json:"callID"`
	UserID  string `json:"userID"`
	Caller  string `json:"caller"`
	Inviter string `json:"inviter"`
	Reason  string `json:"reason"`
	Time    int64  `json:"time"`
}

// expectedMissed folds user's own events of callID (in commit order) into
// the call.missed it must have caused, if any. The caller's accepted state
// from creating the call is no answer; a state repeated (device switch) is
// no change.
func (f *kFinal) expectedMissed(user, callID string) (kMissed, bool) {
	pending := func(s string) bool { return s == "inviting" || s == "received" || s == "notYetReceived" }
	var cur kUser
	settled := false
	var out kMissed
	missed := false
	for _, e := range f.callLog(user, callID) {
		if e.typ != evCreated && e.typ != evReceived && e.typ != evChanged {
			continue
		}
		for _, u := range e.data.CallUserList {
			if u.UserID != user || (u.State == cur.State && u.UpdateTime == cur.UpdateTime) {
				continue
			}
			switch {
			case e.typ == evChanged && (u.State == "accepted" || u.State == "rejected"):
				settled = true
			case pending(cur.State) && !pending(u.State) && !settled:
				settled, missed = true, true
				reasons := []string{"cancelled", "caller_offline"}
				if u.State == "timeout" {
					reasons = []string{"timeout"}
				}
				out = kMissed{inviter: cur.Inviter, at: u.UpdateTime, reasons: reasons}
			}
			cur = u
		}
	}
	// A call ended while the user was pending leaves its state as it was
	// (GET shows it): that invitation ended too.
	if call := f.calls[callID]; call != nil && call.State == "ended" && !settled {
		if me := call.user(user); me != nil && pending(me.State) {
			out, missed = kMissed{inviter: me.Inviter, at: call.EndTime, reasons: []string{"ended", "caller_offline"}}, true
		}
	}
	return out, missed
}

// checkStateHooks adds to bad what is wrong with the call.user_state_changed
// and call.missed messages received (deduplicated by webhook-id, valid):
//
//   - every state change the logs show (each changed user's own log has it)
//     is listed by exactly one call.user_state_changed: none lost, none
//     queued twice under another webhook-id;
//   - every call.user_state_changed lists changes the logs show, with the
//     very callUserList of a callUserStateChanged event: nothing is sent
//     for a change that never happened (a crash undid it, or never made);
//   - each user's state in each call, as GET shows it at the end, is in
//     call.created or in a call.user_state_changed;
//   - a call.missed arrives, once, for each user whose invitation the logs
//     show ended unanswered as the rules of docs/webhooks.md say (with its
//     inviter, time and a reason that fits), and for no one else.
//
// The fence calls, which no user's log reaches, are left to the outbox
// comparison.
func (f *kFinal) checkStateHooks(received map[string]kHook) (bad []string, counted map[string]int) {
	fence := map[string]bool{}
	for _, id := range f.fences {
		fence[id] = true
	}
	// What the logs show.
	changes := map[kChange]string{} // → the first event showing it, to say so
	lists := map[string]bool{}
	initial := map[kChange]bool{} // the states callInvitationCreated shows
	for _, u := range f.users {
		for _, e := range f.logs[u] {
			if e.typ == evCreated {
				for _, cu := range e.data.CallUserList {
					initial[changeKey(e.data.CallID, cu)] = true
				}
			}
		}
	}
	for _, u := range f.users {
		for _, e := range f.logs[u] {
			if e.typ != evChanged || fence[e.data.CallID] {
				continue
			}
			lists[usersKey(e.data.CallID, e.data.CallUserList)] = true
			for _, cu := range e.data.CallUserList {
				if cu.UserID != u {
					continue
				}
				// A main-device switch repeats the user's state unchanged,
				// the caller's from creating the call too: no webhook.
				k := changeKey(e.data.CallID, cu)
				if _, ok := changes[k]; !ok && !initial[k] {
					changes[k] = fmt.Sprintf("event %d of %s's log", e.id, u)
				}
			}
		}
	}
	// What the receivers got.
	counted = map[string]int{}
	listed := map[kChange][]string{} // → the webhook-ids listing it
	created := map[kChange]bool{}
	missed := map[[2]string][]kMissedData{}
	ids := make([]string, 0, len(received))
	for id := range received {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		h := received[id]
		if fence[h.callID] {
			continue
		}
		if _, ok := f.calls[h.callID]; !ok {
			bad = append(bad, fmt.Sprintf("webhook %s (%s) of call %s, which GET /calls does not list", id, h.typ, h.callID))
			continue
		}
		switch h.typ {
		case "call.created":
			var d kCall
			if err := json.Unmarshal(h.data, &d); err != nil {
				bad = append(bad, fmt.Sprintf("webhook %s (%s): %v", id, h.typ, err))
			}
			for _, u := range d.CallUserList {
				created[changeKey(h.callID, u)] = true
			}
		case "call.user_state_changed":
			counted[h.typ]++
			var d struct {
				CallID       string  `json:"callID"`
				CallUserList []kUser `json:"callUserList"`
			}
			if err := json.Unmarshal(h.data, &d); err != nil || len(d.CallUserList) == 0 {
				bad = append(bad, fmt.Sprintf("webhook %s (%s): no callUserList in %s (%v)", id, h.typ, h.data, err))
				continue
			}
			if !lists[usersKey(d.CallID, d.CallUserList)] {
				bad = append(bad, fmt.Sprintf("webhook %s (%s) lists %s, which no callUserStateChanged of the logs does", id, h.typ, h.data))
			}
			for _, u := range d.CallUserList {
				k := changeKey(d.CallID, u)
				listed[k] = append(listed[k], id)
				if _, ok := changes[k]; !ok {
					bad = append(bad, fmt.Sprintf("webhook %s (%s) sent for a change the logs do not show: %s", id, h.typ, k))
				}
			}
		case "call.missed":
			counted[h.typ]++
			var d kMissedData
			if err := json.Unmarshal(h.data, &d); err != nil {
				bad = append(bad, fmt.Sprintf("webhook %s (%s): %v", id, h.typ, err))
				continue
			}
			missed[[2]string{d.CallID, d.UserID}] = append(missed[[2]string{d.CallID, d.UserID}], d)
		}
	}
	for k, where := range changes {
		if n := len(listed[k]); n != 1 {
			bad = append(bad, fmt.Sprintf("%d call.user_state_changed webhooks %v list %s (%s shows it), want 1", n, listed[k], k, where))
		}
	}
	for callID, call := range f.calls {
		for _, u := range call.CallUserList {
			if k := changeKey(callID, u); len(listed[k]) == 0 && !created[k] {
				bad = append(bad, fmt.Sprintf("GET shows %s: neither call.created nor any call.user_state_changed does", k))
			}
		}
		for _, u := range call.CallUserList {
			want, ok := f.expectedMissed(u.UserID, callID)
			got := missed[[2]string{callID, u.UserID}]
			delete(missed, [2]string{callID, u.UserID})
			switch {
			case !ok && len(got) > 0:
				bad = append(bad, fmt.Sprintf("%d call.missed for %s in call %s, whose log shows no invitation of theirs ending unanswered before an answer: %+v", len(got), u.UserID, callID, got))
			case ok && len(got) != 1:
				bad = append(bad, fmt.Sprintf("%d call.missed for %s in call %s, want 1 (%s's invitation by %s ended unanswered at %d): %+v", len(got), u.UserID, callID, u.UserID, want.inviter, want.at, got))
			case ok:
				if d := got[0]; d.Caller != call.Caller || d.Inviter != want.inviter || d.Time != want.at || !slices.Contains(want.reasons, d.Reason) {
					bad = append(bad, fmt.Sprintf("call.missed %+v for %s in call %s, want caller %s, inviter %s, time %d, reason in %v", d, u.UserID, callID, call.Caller, want.inviter, want.at, want.reasons))
				}
			}
		}
	}
	for k, got := range missed {
		bad = append(bad, fmt.Sprintf("%d call.missed for %s in call %s, who is not in it: %+v", len(got), k[1], k[0], got))
	}
	if len(bad) > 20 {
		bad = append(bad[:20:20], fmt.Sprintf("… and %d more", len(bad)-20))
	}
	return bad, counted
}
