package sqlite

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/db"
)

// InsertHook stores one webhook message and fans it out to the outbox
// (db.QueueHook), when an enabled endpoint subscribes to its type: the
// writer's memo knows, or one query finds out (see subscriptions.go).
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
	err := db.QueueHook(ctx, db.PreparedStatement(t.stmt(t.s.wst.insertMessage)),
		db.PreparedStatement(t.stmt(t.s.wst.fanOut)), h)
	return err == nil, err
}
