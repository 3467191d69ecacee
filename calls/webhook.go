package calls

import "context"

// Webhook endpoints and deliveries: the nouns the admin API (handlers) and
// the outbox dispatcher (webhooks) share, declared here so that neither
// adapter imports the other.

// CodeNotFound is the code of an unknown webhook endpoint or delivery.
const CodeNotFound Code = "not_found"

// ErrNotFound matches (errors.Is) any not_found error.
var ErrNotFound = &Error{Code: CodeNotFound, Message: "not found"}

// WebhookEndpoint is a registered receiver of webhook events. EventTypes
// empty means every type. Secret is set only in the answer to its creation
// (and inside the dispatcher); listings never show it.
type WebhookEndpoint struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	EventTypes     []HookType `json:"eventTypes"`
	Description    string     `json:"description"`
	Secret         string     `json:"secret,omitempty"`
	CreatedAt      int64      `json:"createdAt"` // Unix ms
	Enabled        bool       `json:"enabled"`
	DisabledReason string     `json:"disabledReason"`
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

// WebhookDelivery is one event × endpoint row of the outbox, as the admin
// API shows it. NextAttemptAt is 0 unless the delivery is pending;
// LastStatusCode is 0 until an answer was received.
type WebhookDelivery struct {
	ID             string         `json:"id"`
	WebhookID      string         `json:"webhookID"`
	Type           HookType       `json:"type"`
	Status         DeliveryStatus `json:"status"`
	Attempts       int            `json:"attempts"`
	LastStatusCode int            `json:"lastStatusCode"`
	LastError      string         `json:"lastError"`
	NextAttemptAt  int64          `json:"nextAttemptAt"`
	CreatedAt      int64          `json:"createdAt"`
	DeliveredAt    int64          `json:"deliveredAt"`
}

// CreateWebhookInput registers an endpoint (POST /webhooks).
type CreateWebhookInput struct {
	URL         string
	EventTypes  []HookType // empty: all types
	Description string
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

// WebhookRegistry is the admin side of webhooks: endpoints and their
// deliveries. Errors are *Error: invalid_request for a bad URL or event
// type, not_found for an unknown endpoint or delivery.
type WebhookRegistry interface {
	// Create registers an endpoint and returns it with its secret, the
	// only time the secret is shown.
	Create(ctx context.Context, in CreateWebhookInput) (*WebhookEndpoint, error)
	// List returns the endpoints, oldest first, without secrets.
	List(ctx context.Context) ([]WebhookEndpoint, error)
	// Get returns one endpoint without its secret.
	Get(ctx context.Context, id string) (*WebhookEndpoint, error)
	// Delete removes an endpoint; its pending deliveries fail.
	Delete(ctx context.Context, id string) error
	// Deliveries lists an endpoint's deliveries, newest first.
	Deliveries(ctx context.Context, id string, q DeliveryQuery) ([]WebhookDelivery, error)
	// Retry puts a delivery back to pending, due now, and returns it.
	Retry(ctx context.Context, id, deliveryID string) (*WebhookDelivery, error)
}

// WebhookAttempt is a delivery the dispatcher claimed: everything needed to
// send it once. The claim is a lease; the delivery is not claimable again
// until the lease ends or the attempt is finished or released.
type WebhookAttempt struct {
	DeliveryID int64
	EndpointID string
	URL        string
	Secret     string
	MsgID      string // the webhook-id header, the same on every attempt
	Type       HookType
	Payload    []byte // the exact body to sign and send
	Attempts   int    // attempts finished before this one
	CreatedAt  int64  // Unix ms the delivery was queued
}

// WebhookOutcome is the result of one finished attempt.
type WebhookOutcome struct {
	DeliveryID int64
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
}
