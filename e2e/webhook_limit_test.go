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
// endpoint), and deleting one makes room again. On a cluster the count
// holds across nodes.
func TestWebhookEndpointsAreLimited(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend)
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
	})
}
