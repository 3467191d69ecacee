package sqlite

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/db"
)

// InsertHook stores one webhook message and fans it out to the outbox (see
// db.InsertHook) with the write statements prepared on the writer.
// Whether an endpoint subscribes to h's type comes from the writer's memo
// when it has the answer (see subscriptions.go).
func (t *callsTx) InsertHook(ctx context.Context, h *calls.HookEvent) (bool, error) {
	ctx = detached(ctx)
	subscribed, known := t.s.subs[h.Type]
	if !known {
		if err := t.stmt(t.s.wst.subscribed).QueryRowContext(ctx, string(h.Type)).Scan(&subscribed); err != nil {
			return false, fmt.Errorf("db: webhook subscribers of %s: %w", h.Type, err)
		}
		t.s.subs[h.Type] = subscribed
	}
	if !subscribed {
		return false, nil
	}
	return db.InsertHook(ctx, t.hookStatement, h)
}

// hookStatement binds a step's prepared statement to the write transaction
// only when the step runs: most hooks stop at the subscription check.
func (t *callsTx) hookStatement(step db.HookStep) db.Statement {
	switch step {
	case db.HookSubscribed:
		return db.PreparedStatement(t.stmt(t.s.wst.subscribed))
	case db.HookInsertMessage:
		return db.PreparedStatement(t.stmt(t.s.wst.insertMessage))
	default:
		return db.PreparedStatement(t.stmt(t.s.wst.fanOut))
	}
}
