package sqlite

import (
	"context"
	"fmt"

	"callsig/calls"
	"callsig/webhooks"
)

// insertHook stores one webhook message and fans it out to the outbox: one
// pending delivery per enabled endpoint subscribed to its type, due at once.
// A message no endpoint is subscribed to is not stored. The body is built
// by package webhooks, which owns its format; the store keeps the bytes.
func (t *callsTx) insertHook(ctx context.Context, h *calls.HookEvent) error {
	var subscribed bool
	if err := t.stmt(t.s.wst.subscribed).QueryRowContext(ctx, string(h.Type)).Scan(&subscribed); err != nil {
		return fmt.Errorf("db: webhook subscribers of %s: %w", h.Type, err)
	}
	if !subscribed {
		return nil
	}
	msg, err := webhooks.NewMessage(*h)
	if err != nil {
		return fmt.Errorf("db: %w", err)
	}
	var id int64
	err = t.stmt(t.s.wst.insertMessage).QueryRowContext(ctx, msg.ID, string(h.Type),
		h.CallID, msg.Payload, h.Time).Scan(&id)
	if err != nil {
		return fmt.Errorf("db: insert %s webhook: %w", h.Type, err)
	}
	if _, err := t.stmt(t.s.wst.fanOut).ExecContext(ctx, id, h.Time, h.Time, string(h.Type)); err != nil {
		return fmt.Errorf("db: queue %s webhook: %w", h.Type, err)
	}
	return nil
}
