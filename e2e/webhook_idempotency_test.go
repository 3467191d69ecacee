package e2e

import (
	"net/http"
	"sync"
	"testing"

	"callsig/internal/testkit"
)

// Concurrent POST /webhooks with one Idempotency-Key create exactly one
// endpoint: the key is recorded in the transaction that inserts it, so the
// requests that lose the race replay its answer (id and secret) instead of
// creating their own; there is no in-process wait to rely on any more. The
// key with another body is 422.
func TestWebhookCreateIdempotentConcurrently(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, backend)
		rcv := s.NewReceiver()
		body := map[string]any{"url": rcv.URL(), "description": "once"}

		const n = 16
		answers := make([]*testkit.Response, n)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				admin := s.Admin()
				admin.Header.Set("Idempotency-Key", "create-once")
				answers[i] = admin.Post("/webhooks", body)
			})
		}
		wg.Wait()

		var first testkit.Webhook
		fresh := 0
		for i, a := range answers {
			var wh testkit.Webhook
			a.Want(http.StatusCreated).JSON(&wh)
			if i == 0 {
				first = wh
			}
			if wh.ID != first.ID || wh.Secret != first.Secret || wh.Secret == "" {
				t.Fatalf("answer %d is endpoint %s (secret %q), answer 0 is %s (secret %q)", i, wh.ID, wh.Secret, first.ID, first.Secret)
			}
			if a.Header.Get("Idempotent-Replayed") != "true" {
				fresh++
			}
		}
		if fresh != 1 {
			t.Fatalf("%d answers not marked replayed, want exactly 1", fresh)
		}

		var list struct {
			Webhooks []testkit.Webhook `json:"webhooks"`
		}
		s.Admin().Get("/webhooks").Want(http.StatusOK).JSON(&list)
		if len(list.Webhooks) != 1 || list.Webhooks[0].ID != first.ID {
			t.Fatalf("endpoints %+v, want only %s", list.Webhooks, first.ID)
		}

		admin := s.Admin()
		admin.Header.Set("Idempotency-Key", "create-once")
		admin.Post("/webhooks", map[string]any{"url": rcv.URL(), "description": "another"}).
			WantProblem(http.StatusUnprocessableEntity, "idempotency_conflict")
	})
}

// A keyed POST …/retry is answered once and replayed after: the replay
// carries the first answer and does not put the delivery back to pending.
func TestWebhookRetryIdempotent(t *testing.T) {
	testkit.Matrix(t, func(t *testing.T, backend testkit.Option) {
		s := testkit.Start(t, backend, backend)
		rcv := s.NewReceiver()
		wh := s.RegisterWebhook(rcv, "call.created")
		s.Client("alice").Invite(nil, "bob")
		delivered := func(attempts int) func([]testkit.WebhookDelivery) bool {
			return func(l []testkit.WebhookDelivery) bool {
				return len(l) == 1 && l[0].Status == "delivered" && l[0].Attempts == attempts
			}
		}
		d := s.WaitDeliveries(wh.ID, delivered(1))[0]

		admin := s.Admin()
		admin.Header.Set("Idempotency-Key", "retry-once")
		path := "/webhooks/" + wh.ID + "/deliveries/" + d.ID + "/retry"
		first := admin.Post(path, nil).Want(http.StatusAccepted)
		s.WaitDeliveries(wh.ID, delivered(2))
		again := admin.Post(path, nil).Want(http.StatusAccepted)
		if again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(first.Body) {
			t.Fatalf("replay %s (headers %v), first %s", again.Body, again.Header, first.Body)
		}
		// A retry applied again would be pending now: it commits before it answers.
		if l := s.WebhookDeliveries(wh.ID); !delivered(2)(l) {
			t.Fatalf("after the replay: %+v", l)
		}
	})
}
