package calls

// Change is the outcome of one transition: the changed call and everything
// it causes. The Store saves all of it in one transaction.
type Change struct {
	Call    *Call
	Created bool // insert the call row instead of updating it
	Events  []Event
	Hooks   []HookEvent
	// HooksQueued is set by Store.Save (by the time Update returns): how many of Hooks an enabled
	// endpoint subscribes to, so were queued in the outbox. The webhook
	// dispatcher is woken only when it is not 0: without endpoints, a
	// commit must not make it read the outbox.
	HooksQueued int
	// Deadline is the earliest deadline the change armed (0: none), so the
	// scheduler can be woken after the commit.
	Deadline int64
	// BusyUsers are the invitees this change invited although they were
	// busy (BusyRing), for the answer's busyUsers.
	BusyUsers []string

	now  int64
	push *pushRequest
}

// pushRequest names who would need an offline push if they have no stream;
// the Service resolves it against Presence, which pure code cannot see.
type pushRequest struct {
	kind   PushKind
	config PushConfig
	users  []string
}
