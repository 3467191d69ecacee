package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"callsig/internal/testkit"
)

// onlyDelivery waits until the endpoint's single delivery matches and
// returns it.
func onlyDelivery(s *testkit.Server, webhookID string, match func(testkit.WebhookDelivery) bool) testkit.WebhookDelivery {
	s.T.Helper()
	return s.WaitDeliveries(webhookID, func(l []testkit.WebhookDelivery) bool {
		return len(l) == 1 && match(l[0])
	})[0]
}

// afterAttempts matches a delivery with n attempts recorded and status.
func afterAttempts(n int, status string) func(testkit.WebhookDelivery) bool {
	return func(d testkit.WebhookDelivery) bool { return d.Attempts == n && d.Status == status }
}

// wantDueIn fails unless d's next attempt is due after delay ± 10 %
// (the jitter) from now.
func wantDueIn(t *testing.T, s *testkit.Server, d testkit.WebhookDelivery, delay time.Duration) {
	t.Helper()
	lo, hi := s.Now()+(delay-delay/10).Milliseconds(), s.Now()+(delay+delay/10).Milliseconds()
	if d.NextAttemptAt < lo || d.NextAttemptAt > hi {
		t.Fatalf("next attempt at %d (in %s), want in %s ± 10%%", d.NextAttemptAt,
			time.Duration(d.NextAttemptAt-s.Now())*time.Millisecond, delay)
	}
}

// A receiver that fails twice gets the event three times, on the retry
// schedule, with one webhook-id and a fresh signature each time.
func TestWebhookRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	rcv.FailNext(2, http.StatusServiceUnavailable, nil)

	id := s.Client("alice").Invite(nil, "bob").CallID
	rcv.WaitType("call.created", 1, nil)
	d := onlyDelivery(s, wh.ID, afterAttempts(1, "pending"))
	if d.LastStatusCode != http.StatusServiceUnavailable || d.LastError == "" {
		t.Fatalf("after the first failure %+v", d)
	}
	wantDueIn(t, s, d, 5*time.Second)

	s.Advance(4 * time.Second) // not due yet
	rcv.Quiet(quietPeriod)
	s.Advance(2 * time.Second)
	rcv.WaitType("call.created", 2, nil)
	d = onlyDelivery(s, wh.ID, afterAttempts(2, "pending"))
	wantDueIn(t, s, d, 5*time.Minute)

	s.Advance(6 * time.Minute)
	got := rcv.WaitType("call.created", 3, nil)
	d = onlyDelivery(s, wh.ID, afterAttempts(3, "delivered"))
	if d.LastStatusCode != http.StatusNoContent || d.LastError != "" || d.DeliveredAt != s.Now() || d.NextAttemptAt != 0 {
		t.Fatalf("delivered record %+v", d)
	}
	if got[0].ID != got[1].ID || got[1].ID != got[2].ID || string(got[0].Body) != string(got[2].Body) {
		t.Fatalf("retries differ: %q %q %q", got[0].ID, got[1].ID, got[2].ID)
	}
	if got[0].Timestamp == got[2].Timestamp || got[0].Signature == got[2].Signature {
		t.Fatalf("a retry reused the first attempt's timestamp and signature")
	}
	var info struct {
		CallID string `json:"callID"`
	}
	got[2].Decode(t, &info)
	if info.CallID != id {
		t.Fatalf("delivered data %s", got[2].Data)
	}
}

// Retry-After longer than the schedule's delay is honoured.
func TestWebhookHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	rcv.FailNext(1, http.StatusTooManyRequests, http.Header{"Retry-After": {"120"}})

	s.Client("alice").Invite(nil, "bob")
	d := onlyDelivery(s, wh.ID, afterAttempts(1, "pending"))
	if d.NextAttemptAt != s.Now()+120_000 || d.LastStatusCode != http.StatusTooManyRequests {
		t.Fatalf("after 429 Retry-After 120: %+v (now %d)", d, s.Now())
	}
	s.Advance(time.Minute)
	rcv.Quiet(quietPeriod)
	s.Advance(time.Minute)
	rcv.WaitType("call.created", 2, nil)
	onlyDelivery(s, wh.ID, afterAttempts(2, "delivered"))
}

// Redirects and client errors are failures too, retried like the rest.
func TestWebhookNon2xxAnswersAreRetried(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	for _, status := range []int{http.StatusMovedPermanently, http.StatusBadRequest, http.StatusNotFound, http.StatusInternalServerError} {
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.created")
		rcv.FailNext(1, status, nil)
		s.Client("alice").Invite(nil, "bob")
		d := onlyDelivery(s, wh.ID, afterAttempts(1, "pending"))
		if d.LastStatusCode != status {
			t.Fatalf("answer %d recorded as %+v", status, d)
		}
		s.Advance(6 * time.Second)
		onlyDelivery(s, wh.ID, afterAttempts(2, "delivered"))
		s.Admin().Do(http.MethodDelete, "/webhooks/"+wh.ID, nil).Want(http.StatusNoContent)
	}
}

// 410 Gone disables the endpoint: its pending deliveries fail and nothing
// more is queued for it, while other endpoints go on receiving.
func TestWebhookGoneDisablesEndpoint(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	gone, other := s.NewReceiver(), s.NewReceiver()
	wh := s.RegisterWebhook(gone)
	s.RegisterWebhook(other)
	gone.AnswerStatus(http.StatusGone)

	alice, bob := s.Client("alice"), s.Client("bob")
	id := alice.Invite(nil, "bob").CallID
	bob.Action(id, "accept", nil).Want(http.StatusOK)
	other.WaitFor(3, ofCall(id))

	// Depending on timing, the later events were queued before the first
	// 410 or not at all. Attempts already in flight when it came finish and
	// record their own answer; the others fail without being sent.
	list := s.WaitDeliveries(wh.ID, func(l []testkit.WebhookDelivery) bool {
		for _, d := range l {
			if d.Status != "failed" {
				return false
			}
		}
		return len(l) >= 1
	})
	answered := 0
	for _, d := range list {
		if d.LastStatusCode == http.StatusGone {
			answered++
		} else if d.Attempts != 0 || !strings.Contains(d.LastError, "disabled") {
			t.Fatalf("delivery failed by the disable %+v", d)
		}
	}
	if answered < 1 || answered != len(gone.Deliveries()) {
		t.Fatalf("%d deliveries saw 410, the receiver answered %d", answered, len(gone.Deliveries()))
	}
	var got testkit.Webhook
	s.Admin().Get("/webhooks/" + wh.ID).Want(http.StatusOK).JSON(&got)
	if got.Enabled || got.DisabledReason == "" {
		t.Fatalf("endpoint after 410: %+v", got)
	}

	// Nothing is queued for it any more; even a long wait sends nothing.
	before := len(gone.Deliveries())
	id2 := alice.Invite(nil, "bob").CallID
	other.WaitType("call.created", 1, ofCall(id2))
	s.Advance(24 * time.Hour)
	gone.Quiet(quietPeriod)
	if n := len(gone.Deliveries()); n != before {
		t.Fatalf("disabled endpoint got %d more deliveries", n-before)
	}
	if l := s.WebhookDeliveries(wh.ID); len(l) != len(list) {
		t.Fatalf("deliveries queued for a disabled endpoint: %+v", l)
	}
}

// A receiver that is down while callsig restarts still gets every event
// afterwards, each with its original webhook-id.
func TestWebhookPendingSurviveRestart(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv)
	rcv.Down()

	alice, bob := s.Client("alice"), s.Client("bob")
	id := alice.Invite(map[string]any{"pushConfig": map[string]any{"title": "call"}}, "bob").CallID
	bob.Action(id, "reject", nil).Want(http.StatusOK)
	// created, push requested, state changed, ended: each failed once.
	all := func(n int, status string) func([]testkit.WebhookDelivery) bool {
		return func(l []testkit.WebhookDelivery) bool {
			for _, d := range l {
				if d.Attempts != n || d.Status != status {
					return false
				}
			}
			return len(l) == 4
		}
	}
	for _, d := range s.WaitDeliveries(wh.ID, all(1, "pending")) {
		if d.LastStatusCode != 0 || d.LastError == "" {
			t.Fatalf("connection failure recorded as %+v", d)
		}
	}

	s.Restart()
	s.Advance(6 * time.Second) // the second attempt, still down
	s.WaitDeliveries(wh.ID, all(2, "pending"))
	s.Restart()
	rcv.Up()
	s.Advance(6 * time.Minute)
	got := rcv.WaitFor(4, ofCall(id))
	s.WaitDeliveries(wh.ID, all(3, "delivered"))

	types := map[string]bool{}
	ids := map[string]bool{}
	for _, d := range got {
		types[d.Type], ids[d.ID] = true, true
	}
	if len(types) != 4 || len(ids) != 4 || len(rcv.Deliveries()) != 4 {
		t.Fatalf("after the restarts: types %v, %d ids, %d deliveries", types, len(ids), len(rcv.Deliveries()))
	}
}

// After the last scheduled attempt a delivery is failed, stays listed, and
// an admin can retry it by hand with the same webhook-id.
func TestWebhookFailedDeliveryRetriedByHand(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	rcv.AnswerStatus(http.StatusInternalServerError)

	s.Client("alice").Invite(nil, "bob")
	schedule := []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	for i, delay := range schedule {
		d := onlyDelivery(s, wh.ID, afterAttempts(i+1, "pending"))
		wantDueIn(t, s, d, delay)
		s.Advance(delay + delay/10 + time.Second)
	}
	d := onlyDelivery(s, wh.ID, afterAttempts(8, "failed"))
	if d.NextAttemptAt != 0 || d.LastStatusCode != http.StatusInternalServerError || d.DeliveredAt != 0 {
		t.Fatalf("failed record %+v", d)
	}
	s.Advance(48 * time.Hour)
	rcv.Quiet(quietPeriod)
	if n := len(rcv.Deliveries()); n != 8 {
		t.Fatalf("%d attempts, want 8", n)
	}

	rcv.AnswerStatus(0)
	var retried testkit.WebhookDelivery
	s.Admin().Post("/webhooks/"+wh.ID+"/deliveries/"+d.ID+"/retry", nil).Want(http.StatusAccepted).JSON(&retried)
	if retried.ID != d.ID || retried.Status != "pending" || retried.Attempts != 8 || retried.NextAttemptAt != s.Now() {
		t.Fatalf("retry answer %+v (now %d)", retried, s.Now())
	}
	got := rcv.WaitFor(9, nil)
	if got[8].ID != got[0].ID || got[8].Status != http.StatusNoContent {
		t.Fatalf("manual retry sent %s, first attempt %s", got[8].ID, got[0].ID)
	}
	onlyDelivery(s, wh.ID, afterAttempts(9, "delivered"))
}

// A retry by hand is refused with 409 while an attempt of the delivery is
// in flight (that attempt's outcome would overwrite it, and the retry the
// API acknowledged would be lost) and once the endpoint is disabled (the
// delivery would be failed unsent); otherwise it is taken and sent.
func TestWebhookRetryRefusedInFlightOrDisabled(t *testing.T) {
	t.Parallel()
	s := testkit.Start(t, testkit.WithFakeClock())
	rcv := s.NewReceiver()
	wh := s.RegisterWebhook(rcv, "call.created")
	release := rcv.Hold()
	defer release()

	s.Client("alice").Invite(nil, "bob")
	rcv.WaitInFlight(1)
	d := onlyDelivery(s, wh.ID, afterAttempts(0, "pending"))
	retry := "/webhooks/" + wh.ID + "/deliveries/" + d.ID + "/retry"
	s.Admin().Post(retry, nil).WantProblem(http.StatusConflict, "delivery_in_flight")
	release()
	onlyDelivery(s, wh.ID, afterAttempts(1, "delivered"))

	// Once the attempt has ended the retry is taken, and sent.
	rcv.AnswerStatus(http.StatusGone)
	s.Admin().Post(retry, nil).Want(http.StatusAccepted)
	d = onlyDelivery(s, wh.ID, afterAttempts(2, "failed"))
	if d.LastStatusCode != http.StatusGone {
		t.Fatalf("after the retry: %+v, want the receiver's 410", d)
	}
	// The 410 disabled the endpoint: a retry now is refused, not failed later.
	s.Admin().Post(retry, nil).WantProblem(http.StatusConflict, "endpoint_disabled")
	onlyDelivery(s, wh.ID, afterAttempts(2, "failed"))
	if n := len(rcv.Deliveries()); n != 2 {
		t.Fatalf("receiver got %d requests, want 2", n)
	}
}
