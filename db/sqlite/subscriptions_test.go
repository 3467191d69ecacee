package sqlite

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"

	"callsig/calls"
	"callsig/webhooks"
)

// The writer's memo of which webhook types have subscribers follows the
// endpoints: a change queues deliveries exactly when an endpoint exists as
// it runs, even when the endpoint came or went in the same batch.
func TestSubscriptionMemoFollowsTheEndpoints(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	svc := calls.NewService(calls.Options{Store: s})
	invite := func() string {
		t.Helper()
		r, err := svc.Invite(ctx, calls.Actor{UserID: "alice"}, calls.InviteInput{Invitees: []string{"bob"}})
		if err != nil {
			t.Fatal(err)
		}
		return r.CallID
	}
	deliveries := func(callID string) int {
		t.Helper()
		return count(t, s, "webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id WHERE m.call_id = ?", callID)
	}
	endpoint := &webhooks.Endpoint{ID: "wh", URL: "https://example.test/hook", Secret: "s3cret", CreatedAt: 1}

	if c := invite(); deliveries(c) != 0 {
		t.Fatalf("no endpoint, yet %d deliveries", deliveries(c))
	}
	// Read on the writer, in a write that leaves the memo as it is.
	var memo int
	if err := s.writeCalls(ctx, func(*sqlx.Tx) error { memo = len(s.subs); return nil }); err != nil {
		t.Fatal(err)
	}
	if memo == 0 {
		t.Fatal("an invitation's webhook types did not reach the writer's memo")
	}
	if err := s.PutWebhookEndpoint(ctx, endpoint); err != nil {
		t.Fatal(err)
	}
	if c := invite(); deliveries(c) == 0 {
		t.Fatal("an endpoint subscribed to everything, and no delivery of an invitation")
	}
	if err := s.DeleteWebhookEndpoint(ctx, "wh", 2); err != nil {
		t.Fatal(err)
	}
	if c := invite(); deliveries(c) != 0 {
		t.Fatalf("after the endpoint was deleted: %d deliveries", deliveries(c))
	}

	// In one batch: an invitation (the memo learns "nobody"), the endpoint
	// put back, another invitation.
	release := holdWriter(t, s)
	before, after := make(chan string, 1), make(chan string, 1)
	put := make(chan error, 1)
	go func() { before <- invite() }()
	waitQueued(t, s, 1)
	go func() {
		put <- s.PutWebhookEndpoint(ctx, &webhooks.Endpoint{ID: "wh", URL: "https://example.test/other", Secret: "s3cret", CreatedAt: 1})
	}()
	waitQueued(t, s, 2)
	go func() { after <- invite() }()
	waitQueued(t, s, 3)
	release()
	first, second := <-before, <-after
	if err := <-put; err != nil {
		t.Fatal(err)
	}
	if deliveries(first) != 0 || deliveries(second) == 0 {
		t.Fatalf("same batch: %d deliveries before the endpoint came back, %d after; want 0 and some",
			deliveries(first), deliveries(second))
	}
}
