package e2e

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"callsig/internal/testkit"
	"callsig/webhooks"
)

// One endpoint that never answers holds only its own share of the
// dispatcher: another endpoint gets every event at once. Both receivers are
// real HTTP servers on loopback that verify each signature.
func TestWebhookHangingEndpointDoesNotDelayOthers(t *testing.T) {
	s := testkit.Start(t)
	hanging, healthy := s.NewReceiver(), s.NewReceiver()
	s.RegisterWebhook(hanging, "call.created")
	s.RegisterWebhook(healthy, "call.created")
	release := hanging.Hold()
	defer release()
	alice := s.Client("alice")

	const calls = 60
	for i := range calls {
		alice.Invite(nil, fmt.Sprintf("u%d", i))
	}
	got := healthy.WaitType("call.created", calls, nil)

	// Latency: from the change (the call's createTime, written in the
	// same transaction as the outbox row) to the receiver.
	var lat []time.Duration
	for _, d := range got {
		var data struct {
			CreateTime int64 `json:"createTime"`
		}
		d.Decode(t, &data)
		lat = append(lat, d.Received.Sub(time.UnixMilli(data.CreateTime)))
	}
	slices.Sort(lat)
	p99 := lat[int(math.Ceil(0.99*float64(len(lat))))-1]
	t.Logf("healthy endpoint: %d deliveries, p50 %s, p99 %s, max %s", len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	if p99 > time.Second {
		t.Fatalf("healthy endpoint's p99 delivery latency %s, want under 1s", p99)
	}
	if _, total := hanging.Concurrency(); total > webhooks.DefaultShare {
		t.Fatalf("the hanging endpoint held %d attempts at once, more than its share %d", total, webhooks.DefaultShare)
	}
}
