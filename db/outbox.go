package db

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"callsig/calls"
)

// webhookBody is the JSON body of a webhook message, signed and sent as is.
type webhookBody struct {
	Type      calls.HookType  `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// timestampLayout is RFC 3339 with millisecond precision; times are in UTC.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// insertHook stores one webhook message and fans it out to the outbox: one
// pending delivery per enabled endpoint subscribed to its type, due at once.
// A message no endpoint is subscribed to is not stored.
func (t *callsTx) insertHook(ctx context.Context, h *calls.HookEvent) error {
	var subscribed bool
	if err := t.stmt(t.s.wst.subscribed).QueryRowContext(ctx, string(h.Type)).Scan(&subscribed); err != nil {
		return fmt.Errorf("db: webhook subscribers of %s: %w", h.Type, err)
	}
	if !subscribed {
		return nil
	}
	payload, err := json.Marshal(webhookBody{
		Type:      h.Type,
		Timestamp: time.UnixMilli(h.Time).UTC().Format(timestampLayout),
		Data:      h.Data,
	})
	if err != nil {
		return fmt.Errorf("db: encode %s webhook: %w", h.Type, err)
	}
	var id int64
	err = t.stmt(t.s.wst.insertMessage).QueryRowContext(ctx, newMessageID(), string(h.Type),
		h.CallID, payload, h.Time).Scan(&id)
	if err != nil {
		return fmt.Errorf("db: insert %s webhook: %w", h.Type, err)
	}
	if _, err := t.stmt(t.s.wst.fanOut).ExecContext(ctx, id, h.Time, h.Time, string(h.Type)); err != nil {
		return fmt.Errorf("db: queue %s webhook: %w", h.Type, err)
	}
	return nil
}

var msgIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newMessageID returns a webhook message ID ("msg_" and 128 random bits),
// the webhook-id receivers deduplicate on, so it must be unique forever.
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "msg_" + strings.ToLower(msgIDEncoding.EncodeToString(b[:]))
}
