package calls

// Missed calls: the call.missed webhook tells the app's backend that an
// invitee's invitation ended without an answer, so it can show a
// missed-call notification or badge. It is produced by the transitions that
// end a pending invitation, as a HookEvent, so it commits in the same
// transaction as the state change (the outbox), never apart from it.
//
// Rules:
//   - It is sent when an invitation ends while the invitee is inviting,
//     received or notYetReceived: timed out, cancelled by its inviter,
//     cancelled because the caller went offline, or the call ended (advanced
//     mode, end) while it was pending.
//   - Never for a user who accepted or rejected in this call, nor for one
//     who joined it (joining puts the user in accepted, as accepting does).
//     An advanced-call user may be invited again after rejecting, or after
//     quitting; when that invitation goes unanswered there is still no
//     call.missed: the user answered this call once. The caller is in
//     accepted by creating the call, which is no answer: invited back after
//     quitting, it is treated as any invitee.
//   - At most once per invitee per call. An invitee whose first invitation
//     went unanswered may be invited again; a later one that ends
//     unanswered sends none (the backend has already shown that call as
//     missed). One that was sent is never withdrawn, even if the user later
//     accepts a new invitation or joins: it was missed when it was sent.
//
// Both rules rest on CallUser.MissedTime, which settles call.missed for the
// rest of the call: missed sets it when it produces the webhook, answered
// when the user accepts, joins or rejects; once set, no call.missed
// follows.

// MissedReason says how an invitation ended unanswered.
type MissedReason string

const (
	MissedTimeout       MissedReason = "timeout"
	MissedCancelled     MissedReason = "cancelled"
	MissedCallerOffline MissedReason = "caller_offline"
	MissedEnded         MissedReason = "ended"
)

// callMissedHookData is the data of call.missed.
type callMissedHookData struct {
	CallID  string       `json:"callID"`
	UserID  string       `json:"userID"`
	Caller  string       `json:"caller"`
	Inviter string       `json:"inviter"`
	Reason  MissedReason `json:"reason"`
	Time    int64        `json:"time"`
}

// missed produces call.missed for u, whose pending invitation has just
// ended unanswered, unless u's call.missed was settled in this call before
// (produced, or made moot by an answer).
func (t *transition) missed(u *CallUser, reason MissedReason) {
	if u.MissedTime != 0 || acceptedUnsettled(t.call, u) {
		return
	}
	u.MissedTime, u.dirty = t.now, true
	t.hook(HookCallMissed, callMissedHookData{
		CallID: t.call.ID, UserID: u.UserID, Caller: t.call.Caller, Inviter: u.Inviter, Reason: reason, Time: t.now,
	})
}

// acceptedUnsettled reports whether u accepted or joined in c without
// MissedTime recording it: a node of a version before 2026-12-03 (0ead6cf)
// saved answers so, and one still serving during a rolling upgrade goes
// on doing it after the migrations (SQLite's 0012, PostgreSQL's 0010)
// settled the rows they found. AcceptTime shows the answer; the caller's
// is its call's creation, which is no answer. (A rejection such a node
// saved leaves no trace once the user is invited again.)
func acceptedUnsettled(c *Call, u *CallUser) bool {
	return u.AcceptTime > 0 && u.UserID != c.Caller
}

// answered settles u's call.missed without one: u has just accepted, joined
// or rejected, so no later invitation of u in this call that goes
// unanswered sends call.missed.
func (t *transition) answered(u *CallUser) {
	if u.MissedTime == 0 {
		u.MissedTime, u.dirty = t.now, true
	}
}
