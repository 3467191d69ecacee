package webhooks

import (
	"context"

	"callsig/calls"
)

// Store is what the registry and the dispatcher need from storage; the
// SQLite store of package db implements it.
type Store interface {
	InsertWebhookEndpoint(ctx context.Context, e *calls.WebhookEndpoint) error
	PutWebhookEndpoint(ctx context.Context, e *calls.WebhookEndpoint) error
	WebhookEndpoints(ctx context.Context) ([]calls.WebhookEndpoint, error)
	WebhookEndpoint(ctx context.Context, id string) (*calls.WebhookEndpoint, error)
	DeleteWebhookEndpoint(ctx context.Context, id string, now int64) error
	WebhookDeliveries(ctx context.Context, endpointID string, q calls.DeliveryQuery) ([]calls.WebhookDelivery, error)
	RetryWebhookDelivery(ctx context.Context, endpointID string, deliveryID, now int64) (*calls.WebhookDelivery, error)

	ClaimWebhookDeliveries(ctx context.Context, now, leaseUntil int64, limit int) ([]calls.WebhookAttempt, bool, error)
	FinishWebhookAttempt(ctx context.Context, o calls.WebhookOutcome) error
	ReleaseWebhookDelivery(ctx context.Context, deliveryID int64) error
	NextWebhookDue(ctx context.Context) (int64, error)
	WebhookQueueStats(ctx context.Context) (pending int, oldest int64, err error)
}
