package webhooks

import "callsig/calls"

// The nouns of webhooks: registered endpoints, the outbox's deliveries and
// the attempts the dispatcher makes. They belong here, not in the domain
// package calls, which only says what a state change should announce
// (calls.HookEvent); the admin API (handlers) and the storage adapter (db)
// use them to serve and to store what this package defines.

// Endpoint is a registered receiver of webhook events. EventTypes empty
// means every type. Secret is set only in the answer to its creation (and
// inside the dispatcher); listings never show it.
type Endpoint struct {
	ID             string           `json:"id"`
	URL            string           `json:"url"`
	EventTypes     []calls.HookType `json:"eventTypes"`
	Description    string           `json:"description"`
	Secret         string           `json:"secret,omitempty"`
	CreatedAt      int64            `json:"createdAt"` // Unix ms
	Enabled        bool             `json:"enabled"`
	DisabledReason string           `json:"disabledReason"`
}

// CreateInput registers an endpoint (POST /webhooks).
type CreateInput struct {
	URL         string
	EventTypes  []calls.HookType // empty: all types
	Description string
}

// DeliveryStatus is where one event × endpoint delivery stands.
type DeliveryStatus string

const (
	DeliveryPending   DeliveryStatus = "pending"
	DeliveryDelivered DeliveryStatus = "delivered"
	DeliveryFailed    DeliveryStatus = "failed"
)

// Valid reports whether s is one of the three statuses.
func (s DeliveryStatus) Valid() bool {
	return s == DeliveryPending || s == DeliveryDelivered || s == DeliveryFailed
}

// Delivery is one event × endpoint row of the outbox, as the admin API
// shows it. NextAttemptAt is 0 unless the delivery is pending;
// LastStatusCode is 0 until an answer was received.
type Delivery struct {
	ID             string         `json:"id"`
	WebhookID      string         `json:"webhookID"`
	Type           calls.HookType `json:"type"`
	Status         DeliveryStatus `json:"status"`
	Attempts       int            `json:"attempts"`
	LastStatusCode int            `json:"lastStatusCode"`
	LastError      string         `json:"lastError"`
	NextAttemptAt  int64          `json:"nextAttemptAt"`
	CreatedAt      int64          `json:"createdAt"`
	DeliveredAt    int64          `json:"deliveredAt"`
}

// DeliveryQuery filters an endpoint's deliveries, newest first.
type DeliveryQuery struct {
	Status DeliveryStatus // "": any
	Limit  int            // <= 0: DefaultDeliveryLimit
}

// Limits of the deliveries listing.
const (
	DefaultDeliveryLimit = 100
	MaxDeliveryLimit     = 1000
)

// Attempt is a delivery the dispatcher claimed: everything needed to send
// it once. The claim is a lease; the delivery is not claimable again until
// the lease ends or the attempt is finished or released.
type Attempt struct {
	DeliveryID int64
	// Lease is the Unix ms the claim's lease ends. It also names the lease:
	// each claim of a delivery writes a later end than the lease it takes
	// over, so the attempt's outcome and release carry it and count only
	// while the delivery is still leased to it (see ErrLeaseLost).
	Lease      int64
	EndpointID string
	URL        string
	Secret     string
	MsgID      string // the webhook-id header, the same on every attempt
	Type       calls.HookType
	Payload    []byte // the exact body to sign and send
	Attempts   int    // attempts finished before this one
	CreatedAt  int64  // Unix ms the delivery was queued
}

// Outcome is the result of one finished attempt.
type Outcome struct {
	DeliveryID int64
	Lease      int64 // the attempt's lease (Attempt.Lease, or its renewal)
	EndpointID string
	At         int64 // Unix ms the attempt finished
	StatusCode int   // 0: no answer
	Error      string
	// Delivered: a 2xx answer. Otherwise NextAttemptAt > 0 schedules a
	// retry and 0 marks the delivery failed.
	Delivered     bool
	NextAttemptAt int64
	// DisableReason, when set, disables the endpoint (410 Gone) and fails
	// its other pending deliveries.
	DisableReason string
	// URL is where the attempt was sent ("": not known). A 410 from an
	// address the endpoint no longer has says nothing of the new one.
	URL string
	// quietUntil is when the answer's Retry-After ends (Unix ms; 0: none),
	// for the endpoint's breaker; not stored.
	quietUntil int64
}
