package sqlite

import "callsig/calls"

// subscriptions is the writer's memo of whether any enabled endpoint
// subscribes to each webhook event type (sqlSubscribed). Every change asks
// it for each webhook event it causes, nearly always with the same answer,
// and most servers have no endpoint at all: one query per webhook event
// was 5-8 % of the writer's time.
//
// Only a write that is not a change to calls (Update, UpdateDue) can
// change the endpoints, and only a change to calls fills the memo: the
// writer drops it before running any other write (see openBatch.run), and
// when a batch rolls back or fails to commit, since the memo may hold an
// answer that saw endpoints of that batch.
type subscriptions map[calls.HookType]bool

// reset forgets every answer.
func (m subscriptions) reset() { clear(m) }
