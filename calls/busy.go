package calls

// Busy detection: an invitee who is accepted in another started call (on any
// device) is busy. Whether someone is busy is a fact of other calls, so the
// pure transitions cannot see it: the Service asks the store inside the
// invitation's own write transaction (Tx.BusyUsers) and hands the answer to
// NewCall and CallingInvite as a Busy set. Reading it in the same
// transaction means no accept committed in between can be missed.

// BusyPolicy says what an invitation does with a busy invitee.
type BusyPolicy string

const (
	// BusyRing invites busy invitees as usual (ZIM's behaviour) and lists
	// them in the answer's busyUsers, so the app may show "on another call".
	BusyRing BusyPolicy = "ring"
	// BusyReject leaves busy invitees out: they come back in errorUserList
	// with reason busy.
	BusyReject BusyPolicy = "reject"
)

// ReasonBusy is the errorUserList reason of an invitee left out by
// BusyReject.
const ReasonBusy = "busy"

// Busy is the set of invitees accepted in another started call.
type Busy map[string]bool

// NewBusy returns the set of userIDs.
func NewBusy(userIDs []string) Busy {
	b := make(Busy, len(userIDs))
	for _, id := range userIDs {
		b[id] = true
	}
	return b
}

func checkBusyPolicy(p BusyPolicy) error {
	switch p {
	case "", BusyRing, BusyReject:
		return nil
	}
	return invalid("busyPolicy", "must be ring or reject, got %q", p)
}
