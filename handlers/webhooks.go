package handlers

import (
	"context"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"callsig/calls"
	"callsig/webhooks"
)

// WebhookAdmin is the admin side of webhooks the /webhooks endpoints serve
// (webhooks.Registry). Errors are *calls.Error: invalid_request for a bad
// URL or event type, not_found for an unknown endpoint or delivery.
type WebhookAdmin interface {
	// Create registers an endpoint and returns it with its secret, the
	// only time the secret is shown. Like Retry it honours the
	// calls.Idempotency ctx carries (idempotentContext): the answer is
	// stored with the change, and a replay returns nil and no error.
	Create(ctx context.Context, in webhooks.CreateInput) (*webhooks.Endpoint, error)
	// List returns the endpoints, oldest first, without secrets.
	List(ctx context.Context) ([]webhooks.Endpoint, error)
	// Get returns one endpoint without its secret.
	Get(ctx context.Context, id string) (*webhooks.Endpoint, error)
	// Delete removes an endpoint; its pending deliveries fail. It returns
	// once the attempts in flight to the endpoint have ended, so nothing
	// reaches it after the answer.
	Delete(ctx context.Context, id string) error
	// Deliveries lists an endpoint's deliveries still kept, newest first.
	Deliveries(ctx context.Context, id string, q webhooks.DeliveryQuery) ([]webhooks.Delivery, error)
	// Retry puts a delivery back to pending, due now, and returns it.
	Retry(ctx context.Context, id, deliveryID string) (*webhooks.Delivery, error)
}

// createWebhookBody is the body of POST /webhooks.
type createWebhookBody struct {
	URL         string           `json:"url"`
	EventTypes  []calls.HookType `json:"eventTypes"`
	Description string           `json:"description"`
}

// mountWebhooks registers the webhook administration endpoints on r, which
// already requires admin rights. Nothing is mounted without a registry.
func mountWebhooks(r chi.Router, reg WebhookAdmin) {
	if reg == nil {
		return
	}
	r.Method(http.MethodPost, "/webhooks", recordsInTx(func(w http.ResponseWriter, r *http.Request) {
		var b createWebhookBody
		if err := decodeJSON(r, &b, false); err != nil {
			writeError(w, r, err)
			return
		}
		ctx, intent := idempotentContext(r, http.StatusCreated)
		e, err := reg.Create(ctx, webhooks.CreateInput{URL: b.URL, EventTypes: b.EventTypes, Description: b.Description})
		respondIdempotent(w, r, intent, http.StatusCreated, e, err)
	}))
	r.Get("/webhooks", func(w http.ResponseWriter, r *http.Request) {
		list, err := reg.List(r.Context())
		respond(w, r, http.StatusOK, map[string]any{"webhooks": list}, err)
	})
	r.Get("/webhooks/{id}", func(w http.ResponseWriter, r *http.Request) {
		e, err := reg.Get(r.Context(), chi.URLParam(r, "id"))
		respond(w, r, http.StatusOK, e, err)
	})
	r.Delete("/webhooks/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := reg.Delete(r.Context(), chi.URLParam(r, "id")); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	r.Get("/webhooks/{id}/deliveries", func(w http.ResponseWriter, r *http.Request) {
		q := webhooks.DeliveryQuery{Status: webhooks.DeliveryStatus(r.URL.Query().Get("status"))}
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > webhooks.MaxDeliveryLimit {
				writeError(w, r, invalidField("limit", "must be an integer from 1 to %d", webhooks.MaxDeliveryLimit))
				return
			}
			q.Limit = n
		}
		list, err := reg.Deliveries(r.Context(), chi.URLParam(r, "id"), q)
		respond(w, r, http.StatusOK, map[string]any{"deliveries": list}, err)
	})
	r.Method(http.MethodPost, "/webhooks/{id}/deliveries/{deliveryID}/retry", recordsInTx(func(w http.ResponseWriter, r *http.Request) {
		ctx, intent := idempotentContext(r, http.StatusAccepted)
		d, err := reg.Retry(ctx, chi.URLParam(r, "id"), chi.URLParam(r, "deliveryID"))
		respondIdempotent(w, r, intent, http.StatusAccepted, d, err)
	}))
}
