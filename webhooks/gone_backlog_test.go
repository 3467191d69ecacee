package webhooks_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"callsig/db"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// A 410 fails one batch (db.FailBatch) of its endpoint's backlog with its
// outcome and leaves the rest to the claims' sweep of dead endpoints. No
// claim came while no endpoint was live: the rest stayed pending, in the
// listing and the queue's statistics, for as long as no other endpoint
// had something due (until they expired, 48 h at least).
func TestGoneBacklogFailsWithoutAnotherEndpoint(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	e := r.endpoint(srv.URL)
	backlog := 2*db.FailBatch + 200
	for range backlog {
		r.call()
	}
	pending := func() int {
		l, err := r.store.WebhookDeliveries(context.Background(), e.ID, webhooks.DeliveryQuery{Status: webhooks.DeliveryPending, Limit: webhooks.MaxDeliveryLimit})
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	r.dispatcher(webhooks.DispatcherOptions{Workers: 1, Share: 1})
	wait.For(t, 10*time.Second, "the 410 to disable the endpoint", func() bool {
		got, err := r.store.WebhookEndpoint(context.Background(), e.ID)
		return err == nil && !got.Enabled
	})
	if !wait.Until(5*time.Second, func() bool { return pending() == 0 }) {
		t.Fatalf("the endpoint disabled by a 410: %d of its deliveries still pending, want none", pending())
	}
}
