package e2e

import (
	"fmt"
	"net/http"
	"testing"

	"callsig/internal/testkit"
	"callsig/webhooks"
)

// An admin registers endpoints up to webhooks.MaxEndpoints; the next is
// refused with 409 webhook_limit (every claim of deliveries reads each
// endpoint), and deleting one makes room again. On SQLite only: the count
// is the stores' (db/storetest's WebhookEndpointCount runs it on both,
// two transactions at once included), and a hundred registrations on the
// cluster cost the suite seconds for nothing more.
func TestWebhookEndpointsAreLimited(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t)
	rcv := s.NewReceiver()
	var first testkit.Webhook
	for i := range webhooks.MaxEndpoints {
		var wh testkit.Webhook
		s.Admin().Post("/webhooks", map[string]any{"url": rcv.URL(), "description": fmt.Sprint(i)}).
			Want(http.StatusCreated).JSON(&wh)
		if i == 0 {
			first = wh
		}
	}
	s.Admin().Post("/webhooks", map[string]any{"url": rcv.URL()}).WantProblem(http.StatusConflict, "webhook_limit")
	s.Admin().Do(http.MethodDelete, "/webhooks/"+first.ID, nil).Want(http.StatusNoContent)
	s.Admin().Post("/webhooks", map[string]any{"url": rcv.URL()}).Want(http.StatusCreated)
	s.Admin().Post("/webhooks", map[string]any{"url": rcv.URL()}).WantProblem(http.StatusConflict, "webhook_limit")
}
