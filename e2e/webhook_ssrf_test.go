package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// noPrivate runs the server as production does: webhooks may not reach
// loopback, private, link-local or other special addresses.
func noPrivate(c *app.Config) { c.WebhookAllowPrivate = false }

// Registration refuses URLs of internal addresses, literal or resolved.
func TestWebhookRefusesInternalURLs(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(noPrivate))
	for _, u := range []string{
		"http://10.0.0.1/hook",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::1]/hook",
		"http://127.0.0.1:8080/hook",
		"https://192.168.1.10/hook",
		"http://[fd00::1]/hook",
		"http://[::ffff:127.0.0.1]/hook",
		"http://0.0.0.0/hook",
		"http://100.64.0.1/hook",
		"http://localhost:9000/hook", // a name resolving to loopback
		"http://localhost./hook",
	} {
		p := s.Admin().Post("/webhooks", map[string]any{"url": u}).WantProblem(http.StatusBadRequest, "invalid_request")
		if len(p.Errors) != 1 || p.Errors[0].Field != "url" {
			t.Errorf("%s: %+v", u, p)
		}
	}
	var list struct {
		Webhooks []testkit.Webhook `json:"webhooks"`
	}
	s.Admin().Get("/webhooks").Want(http.StatusOK).JSON(&list)
	if len(list.Webhooks) != 0 {
		t.Fatalf("registered anyway: %+v", list.Webhooks)
	}
}

// The address is checked again when dialing: an endpoint that was allowed
// (here: registered while private addresses were) is refused at dial time
// once they are not, and the receiver never sees a request.
func TestWebhookRefusesInternalAddressAtDialTime(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	s.Config.WebhookAllowPrivate = false
	s.Restart()

	s.Client("alice").Invite(nil, "bob")
	d := onlyDelivery(s, wh.ID, afterAttempts(1, "pending"))
	if d.LastStatusCode != 0 || !strings.Contains(d.LastError, "prohibited IP address") {
		t.Fatalf("delivery to loopback %+v", d)
	}
	s.Advance(6 * time.Second)
	onlyDelivery(s, wh.ID, afterAttempts(2, "pending"))
	if n := len(rcv.Deliveries()); n != 0 {
		t.Fatalf("the receiver got %d requests", n)
	}
}

// A redirect is an answer, not an instruction: the delivery fails with the
// 3xx and its Location (here another receiver) is never requested, so a
// public endpoint cannot bounce deliveries to an internal one.
func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	bouncer, target := s.NewReceiver(), s.NewReceiver()
	wh := s.RegisterWebhook(bouncer, "call.created")
	target.SetSecret(wh.Secret)
	bouncer.RedirectTo(target.URL())

	s.Client("alice").Invite(nil, "bob")
	d := onlyDelivery(s, wh.ID, afterAttempts(1, "pending"))
	if d.LastStatusCode != http.StatusFound || !strings.Contains(d.LastError, "302") {
		t.Fatalf("redirected delivery %+v", d)
	}
	target.Quiet(quietPeriod)
	if n := len(target.Deliveries()); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}
