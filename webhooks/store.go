package webhooks

import (
	"context"
)

// Store is what the registry and the dispatcher need from storage; the
// SQLite store of package db implements it.
type Store interface {
	InsertWebhookEndpoint(ctx context.Context, e *Endpoint) error
	PutWebhookEndpoint(ctx context.Context, e *Endpoint) error
	WebhookEndpoints(ctx context.Context) ([]Endpoint, error)
	WebhookEndpoint(ctx context.Context, id string) (*Endpoint, error)
	DeleteWebhookEndpoint(ctx context.Context, id string, now int64) error
	WebhookDeliveries(ctx context.Context, endpointID string, q DeliveryQuery) ([]Delivery, error)
	RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*Delivery, error)

	ClaimWebhookDeliveries(ctx context.Context, now, leaseUntil int64, limit int) ([]Attempt, bool, error)
	FinishWebhookAttempt(ctx context.Context, o Outcome) error
	ReleaseWebhookDelivery(ctx context.Context, deliveryID int64) error
	NextWebhookDue(ctx context.Context) (int64, error)
	WebhookQueueStats(ctx context.Context) (pending int, oldest int64, err error)
}
