package e2e

import (
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
	"callsig/internal/wait"
)

// The delivery log keeps finished deliveries for CALLSIG_WEBHOOK_RETENTION
// and then forgets them, while newer ones stay listed.
func TestWebhookDeliveryLogKeepsWhatIsWithinRetention(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) {
		c.WebhookRetention = 24 * time.Hour
	}))
	start := s.Now()
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	alice := s.Client("alice")
	deliveredN := func(n int) func([]testkit.WebhookDelivery) bool {
		return func(l []testkit.WebhookDelivery) bool {
			for _, d := range l {
				if d.Status != "delivered" {
					return false
				}
			}
			return len(l) == n
		}
	}

	alice.Invite(nil, "bob")
	s.WaitDeliveries(wh.ID, deliveredN(1))
	s.Advance(12 * time.Hour)
	alice.Invite(nil, "carol")
	s.WaitDeliveries(wh.ID, deliveredN(2))

	// The pruner runs every 10 minutes of clock time and re-arms itself
	// after each run: step the clock in such steps past the first
	// delivery's retention, short of the second one's, until it is gone.
	// (Stopping the clock at one instant could leave the pruner's next
	// timer armed just after it.) Up to the retention at once: stepped
	// once per poll, the 138 steps took most of the wait's bound on a
	// loaded machine.
	for s.Now() < start+(24*time.Hour).Milliseconds() {
		s.Advance(10 * time.Minute)
	}
	wait.For(t, eventWait, "the delivery past retention to be pruned", func() bool {
		if s.Now() < start+(35*time.Hour).Milliseconds() {
			s.Advance(10 * time.Minute)
		}
		return len(s.WebhookDeliveries(wh.ID)) == 1
	})
	l := s.WebhookDeliveries(wh.ID)
	if l[0].CreatedAt != start+(12*time.Hour).Milliseconds() || l[0].Status != "delivered" {
		t.Fatalf("kept %+v, want the delivery within retention", l[0])
	}
}
