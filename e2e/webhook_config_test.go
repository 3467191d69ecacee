package e2e

import (
	"net/http"
	"testing"

	"callsig/internal/testkit"
	"callsig/webhooks"
)

// CALLSIG_WEBHOOK_URL and CALLSIG_WEBHOOK_SECRET configure one endpoint
// without the API; it follows the configuration at every start.
func TestWebhookConfiguredEndpoint(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	secret := webhooks.NewSecret()
	s.Config.WebhookURL, s.Config.WebhookSecret = rcv.URL(), secret
	s.Restart()
	rcv.SetSecret(secret)

	var wh testkit.Webhook
	s.Admin().Get("/webhooks/" + webhooks.ConfiguredID).Want(http.StatusOK).JSON(&wh)
	if wh.URL != rcv.URL() || !wh.Enabled || len(wh.EventTypes) != 0 {
		t.Fatalf("configured endpoint %+v", wh)
	}
	id := s.Client("alice").Invite(nil, "bob").CallID
	rcv.WaitType("call.created", 1, ofCall(id))

	// Restarting with the same configuration keeps one endpoint.
	s.Restart()
	var list struct {
		Webhooks []testkit.Webhook `json:"webhooks"`
	}
	s.Admin().Get("/webhooks").Want(http.StatusOK).JSON(&list)
	if len(list.Webhooks) != 1 {
		t.Fatalf("after restart: %+v", list.Webhooks)
	}

	// Without the configuration the endpoint goes away.
	s.Config.WebhookURL, s.Config.WebhookSecret = "", ""
	s.Restart()
	s.Admin().Get("/webhooks/"+webhooks.ConfiguredID).WantProblem(http.StatusNotFound, "not_found")
}
