package webhooks

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"callsig/calls"
	"callsig/internal/jsonenc"
)

// Message is one webhook message ready for the outbox: the webhook-id
// receivers deduplicate on and the exact body that is signed and sent.
type Message struct {
	ID      string
	Payload []byte
}

// body is the JSON body of a webhook message: {type, timestamp, data}, as
// the contract and the Standard Webhooks convention have it.
type body struct {
	Type      calls.HookType  `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// timestampLayout is RFC 3339 with millisecond precision; times are in UTC.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// NewMessage builds the message for a hook event a state change produced.
// It is pure apart from the random ID, so the store calls it inside the
// transaction that writes the change: the outbox row commits with it.
func NewMessage(h calls.HookEvent) (Message, error) {
	payload, err := jsonenc.Marshal(body{
		Type:      h.Type,
		Timestamp: time.UnixMilli(h.Time).UTC().Format(timestampLayout),
		Data:      h.Data,
	})
	if err != nil {
		return Message{}, fmt.Errorf("webhooks: encode %s message: %w", h.Type, err)
	}
	return Message{ID: newMessageID(), Payload: payload}, nil
}

var msgIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newMessageID returns a webhook message ID ("msg_" and 128 random bits),
// the webhook-id receivers deduplicate on, so it must be unique forever.
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "msg_" + strings.ToLower(msgIDEncoding.EncodeToString(b[:]))
}
