package webhooks_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/wait"
	"callsig/webhooks"
)

// Endpoints that hang, however many, cannot hold every worker: the last
// quarter of them takes first attempts only, so an endpoint that answers
// still gets its delivery at once, not after the hanging attempts time
// out. Four hanging endpoints with a share of two would fill eight
// workers; they hold six.
func TestHangingEndpointsLeaveTheReserve(t *testing.T) {
	r := newRig(t)
	var hanging atomic.Int32
	release := make(chan struct{})
	defer close(release)
	hang := func(w http.ResponseWriter, req *http.Request) {
		hanging.Add(1)
		defer hanging.Add(-1)
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}
	for range 4 {
		srv, _ := countingServer(t, hang)
		r.endpoint(srv.URL)
	}
	r.dispatcher(webhooks.DispatcherOptions{Workers: 8, Share: 2,
		Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true, Timeout: time.Minute})})
	for range 3 { // three deliveries due to each hanging endpoint
		r.call()
	}
	wait.For(t, 10*time.Second, "the hanging endpoints to hold six workers", func() bool { return hanging.Load() >= 6 })

	healthy, hits := countingServer(t, nil)
	e := r.endpoint(healthy.URL)
	r.call()
	if !wait.Until(5*time.Second, func() bool { return hits.Load() == 1 }) {
		t.Fatalf("the answering endpoint got no attempt in 5 s while %d hanging attempts held the workers", hanging.Load())
	}
	r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryDelivered))
	if n := hanging.Load(); n > 6 {
		t.Fatalf("the hanging endpoints hold %d of 8 workers, want at most 6 (the reserve is 2)", n)
	}
}
