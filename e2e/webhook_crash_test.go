package e2e

import (
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"callsig/internal/testkit"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// A SIGKILL while a webhook attempt is in flight leaves its delivery
// leased with no outcome. The restarted node, the file's only process,
// sends it again as soon as it is up, under the same webhook-id, rather
// than after the lease (2 minutes by default).
func TestCrashMidWebhookSendsItAgainAtOnce(t *testing.T) {
	t.Parallel()
	bin := buildServer(t)
	dbPath := filepath.Join(t.TempDir(), "callsig.db")
	addr := testkit.FreeAddr(t)
	rcv := testkit.NewReceiver(t)
	secret := webhooks.NewSecret()
	rcv.SetSecret(secret)
	env := []string{"CALLSIG_WEBHOOK_URL=" + rcv.URL(), "CALLSIG_WEBHOOK_SECRET=" + secret, "CALLSIG_WEBHOOK_ALLOW_PRIVATE=true"}
	p := startProcess(t, bin, dbPath, addr, env...)

	release := rcv.Hold()
	defer release()
	if status, body := p.do("alice", http.MethodPost, "/calls", map[string]any{"invitees": []string{"bob"}}); status != http.StatusCreated {
		t.Fatalf("POST /calls: %d %v", status, body)
	}
	wait.For(t, 10*time.Second, "the call.created attempt in flight", func() bool { return rcv.InFlight() > 0 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	wait.For(t, 10*time.Second, "the receiver to see the sender gone", func() bool { return rcv.InFlight() == 0 })
	release()
	first := rcv.Deliveries()
	if len(first) != 1 || first[0].Type != "call.created" {
		t.Fatalf("before the kill the receiver got %d deliveries, want the one call.created", len(first))
	}

	restarted := time.Now()
	startProcess(t, bin, dbPath, addr, env...)
	var again testkit.Delivery
	wait.For(t, 15*time.Second, "the call.created sent again after the restart", func() bool {
		for _, d := range rcv.Deliveries() {
			if d.Received.After(restarted) && d.ID == first[0].ID {
				again = d
				return true
			}
		}
		return false
	})
	if !again.Valid || again.Type != "call.created" {
		t.Fatalf("the delivery after the restart: %+v, want a valid call.created", again)
	}
}
