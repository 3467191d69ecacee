package webhooks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"callsig/calls"
	"callsig/webhooks"
)

var errEncode = errors.New("encode failed")

// keyed returns ctx carrying an Idempotency for key, as the transport puts
// it there: answers are the JSON of the result with status, or errEncode
// when fail is set.
func keyed(key, fingerprint string, now time.Time, status int, fail bool) (context.Context, *calls.Idempotency) {
	i := &calls.Idempotency{
		Scope: "ops POST /webhooks", Key: key, Fingerprint: fingerprint,
		Now: now.UnixMilli(), ExpiresAt: now.Add(time.Hour).UnixMilli(),
		Encode: func(result any) (calls.StoredResponse, error) {
			if fail {
				return calls.StoredResponse{}, errEncode
			}
			body, err := json.Marshal(result)
			return calls.StoredResponse{Status: status, ContentType: "application/json", Body: body}, err
		},
	}
	return calls.WithIdempotency(context.Background(), i), i
}

// Issue 9, defect 2 for the webhook admin routes: the endpoint and the
// Idempotency-Key record commit in one transaction. An answer that cannot
// be stored rolls the endpoint back; a second request with the key replays
// the first endpoint (id and secret) and creates none; another request
// under the key is a mismatch. Before, Create ignored the key (the HTTP
// layer stored the answer afterwards, in a transaction of its own).
func TestRegistryCreateRecordsKeyWithEndpoint(t *testing.T) {
	r := newRig(t)
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	in := webhooks.CreateInput{URL: "http://127.0.0.1:9/hook", Description: "keyed"}
	count := func() int {
		t.Helper()
		list, err := reg.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	ctx, _ := keyed("k", "body-1", epoch, http.StatusCreated, true)
	if e, err := reg.Create(ctx, in); !errors.Is(err, errEncode) || e != nil {
		t.Fatalf("create with a failing Encode: %+v, %v", e, err)
	}
	if n := count(); n != 0 {
		t.Fatalf("the endpoint committed without its record: %d endpoints", n)
	}
	if rec, err := r.store.LookupIdempotency(context.Background(), "ops POST /webhooks", "k", epoch.UnixMilli()); rec != nil || err != nil {
		t.Fatalf("record after a failed create: %+v, %v", rec, err)
	}

	// The key was not consumed: the retry creates the endpoint now.
	ctx, first := keyed("k", "body-1", epoch, http.StatusCreated, false)
	e, err := reg.Create(ctx, in)
	if err != nil || e == nil {
		t.Fatalf("create: %+v, %v", e, err)
	}
	resp, replayed, ok := first.Response()
	var stored webhooks.Endpoint
	if !ok || replayed || resp.Status != http.StatusCreated || json.Unmarshal(resp.Body, &stored) != nil ||
		stored.ID != e.ID || stored.Secret != e.Secret || stored.Secret == "" {
		t.Fatalf("first answer %+v %s (replayed %v, ok %v), endpoint %+v", resp, resp.Body, replayed, ok, e)
	}

	ctx, second := keyed("k", "body-1", epoch, http.StatusCreated, false)
	if again, err := reg.Create(ctx, in); again != nil || err != nil {
		t.Fatalf("replay: %+v, %v", again, err)
	}
	if got, replayed, ok := second.Response(); !ok || !replayed || got.Status != resp.Status || !bytes.Equal(got.Body, resp.Body) {
		t.Fatalf("replayed %+v %s (replayed %v, ok %v), want %s", got, got.Body, replayed, ok, resp.Body)
	}

	ctx, other := keyed("k", "body-2", epoch, http.StatusCreated, false)
	if e, err := reg.Create(ctx, webhooks.CreateInput{URL: "http://127.0.0.1:9/other"}); !errors.Is(err, calls.ErrIdempotencyMismatch) || e != nil {
		t.Fatalf("another request under the key: %+v, %v", e, err)
	}
	if _, _, ok := other.Response(); ok {
		t.Fatal("a mismatch has an answer")
	}
	if n := count(); n != 1 {
		t.Fatalf("%d endpoints, want 1", n)
	}
}

// A keyed retry of a delivery commits with its record too: a failing
// Encode leaves the delivery as it was, and a second request with the key
// replays the first answer without rescheduling the delivery again.
func TestRegistryRetryRecordsKeyWithChange(t *testing.T) {
	r := newRig(t)
	wh := r.endpoint("http://127.0.0.1:9/hook")
	r.call()
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	due := func() int64 {
		t.Helper()
		l, err := r.store.WebhookDeliveries(context.Background(), wh.ID, webhooks.DeliveryQuery{})
		if err != nil || len(l) != 1 {
			t.Fatalf("deliveries %+v, %v", l, err)
		}
		return l[0].NextAttemptAt
	}
	d0 := r.waitDelivery(wh.ID, attempts(0, webhooks.DeliveryPending))

	r.clock.Advance(time.Minute)
	ctx, _ := keyed("r", "retry", r.clock.Now(), http.StatusAccepted, true)
	if d, err := reg.Retry(ctx, wh.ID, d0.ID); !errors.Is(err, errEncode) || d != nil {
		t.Fatalf("retry with a failing Encode: %+v, %v", d, err)
	}
	if got := due(); got != d0.NextAttemptAt {
		t.Fatalf("the retry committed without its record: due %d, was %d", got, d0.NextAttemptAt)
	}

	ctx, first := keyed("r", "retry", r.clock.Now(), http.StatusAccepted, false)
	d, err := reg.Retry(ctx, wh.ID, d0.ID)
	retried := r.clock.Now().UnixMilli()
	if err != nil || d == nil || d.NextAttemptAt != retried || due() != retried {
		t.Fatalf("retry: %+v, %v", d, err)
	}
	resp, replayed, ok := first.Response()
	if !ok || replayed || resp.Status != http.StatusAccepted {
		t.Fatalf("first answer %+v (replayed %v, ok %v)", resp, replayed, ok)
	}

	r.clock.Advance(time.Minute)
	ctx, second := keyed("r", "retry", r.clock.Now(), http.StatusAccepted, false)
	if d, err := reg.Retry(ctx, wh.ID, d0.ID); d != nil || err != nil {
		t.Fatalf("replay: %+v, %v", d, err)
	}
	if got, replayed, ok := second.Response(); !ok || !replayed || !bytes.Equal(got.Body, resp.Body) {
		t.Fatalf("replayed %s (replayed %v, ok %v), want %s", got.Body, replayed, ok, resp.Body)
	}
	if got := due(); got != retried {
		t.Fatalf("the replay rescheduled the delivery: due %d, want %d", got, retried)
	}
}
