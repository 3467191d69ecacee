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
//     mode, end) while it was pending. Accepting or rejecting is an answer:
//     no call.missed for that invitation.
//   - At most once per invitee per call. An advanced-call invitee may be
//     invited again after a first invitation ended (missed, rejected, or
//     after quitting; the caller too, once it quit). The first invitation
//     of theirs that ends unanswered sends call.missed; a later one in the
//     same call sends none (the
//     backend has already shown that call as missed). One that was sent is
//     never withdrawn, even if the user later accepts a new invitation or
//     joins: it was missed when it was sent.

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
// ended unanswered, unless one was produced for u in this call before.
func (t *transition) missed(u *CallUser, reason MissedReason) {
	if u.MissedTime != 0 {
		return
	}
	u.MissedTime, u.dirty = t.now, true
	t.hook(HookCallMissed, callMissedHookData{
		CallID: t.call.ID, UserID: u.UserID, Caller: t.call.Caller, Inviter: u.Inviter, Reason: reason, Time: t.now,
	})
}
