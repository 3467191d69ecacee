package webhooks_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"callsig/webhooks"
)

// The Standard Webhooks specification's published test vector (the
// reference libraries' TestWebhookSign): matching it is what lets a receiver
// verify callsig's deliveries with any of the specification's libraries.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignerMatchesStandardWebhooksVector(t *testing.T) {
	s, err := webhooks.NewSigner(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload)); got != vectorSignature {
		t.Fatalf("signature %s, want %s", got, vectorSignature)
	}
	h := s.Headers(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload))
	if h.Get("webhook-id") != vectorID || h.Get("webhook-timestamp") != "1614265330" || h.Get("webhook-signature") != vectorSignature {
		t.Fatalf("headers %v", h)
	}
	// The specification's libraries also take the secret without its prefix.
	bare, err := webhooks.NewSigner(strings.TrimPrefix(vectorSecret, "whsec_"))
	if err != nil || bare.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload)) != vectorSignature {
		t.Fatalf("unprefixed secret: %v", err)
	}
}

func TestNewSecret(t *testing.T) {
	a, b := webhooks.NewSecret(), webhooks.NewSecret()
	if a == b || !strings.HasPrefix(a, "whsec_") {
		t.Fatalf("secrets %q %q", a, b)
	}
	key, err := webhooks.ParseSecret(a)
	if err != nil || len(key) != 32 {
		t.Fatalf("key of %q: %d bytes, %v", a, len(key), err)
	}
	for _, bad := range []string{"", "whsec_", "whsec_not base64!", "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23))} {
		if _, err := webhooks.ParseSecret(bad); !errors.Is(err, webhooks.ErrInvalidSecret) {
			t.Errorf("ParseSecret(%q) = %v", bad, err)
		}
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(vectorTimestamp, 0)
	body := []byte(vectorPayload)
	headers := func(ts int64, sig string) http.Header {
		h := http.Header{}
		h.Set("webhook-id", vectorID)
		h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		h.Set("webhook-signature", sig)
		return h
	}
	other := webhooks.NewSecret()
	signer, _ := webhooks.NewSigner(vectorSecret)
	old := now.Add(-6 * time.Minute)
	tests := []struct {
		name   string
		secret string
		header http.Header
		body   string
		want   error
	}{
		{"the vector", vectorSecret, headers(vectorTimestamp, vectorSignature), vectorPayload, nil},
		{"one of several signatures", vectorSecret, headers(vectorTimestamp, "v1,AAAA v2,"+vectorSignature[3:]+" "+vectorSignature), vectorPayload, nil},
		{"tampered body", vectorSecret, headers(vectorTimestamp, vectorSignature), `{"test": 2432232315}`, webhooks.ErrNoMatchingSignature},
		{"wrong secret", other, headers(vectorTimestamp, vectorSignature), vectorPayload, webhooks.ErrNoMatchingSignature},
		{"other id", vectorSecret, func() http.Header {
			h := headers(vectorTimestamp, vectorSignature)
			h.Set("webhook-id", "msg_x")
			return h
		}(), vectorPayload, webhooks.ErrNoMatchingSignature},
		{"old timestamp", vectorSecret, headers(old.Unix(), signer.Sign(vectorID, old, body)), vectorPayload, webhooks.ErrTimestampTooOld},
		{"future timestamp", vectorSecret, headers(now.Add(6*time.Minute).Unix(), signer.Sign(vectorID, now.Add(6*time.Minute), body)), vectorPayload, webhooks.ErrTimestampTooNew},
		{"timestamp moved", vectorSecret, headers(vectorTimestamp+1, vectorSignature), vectorPayload, webhooks.ErrNoMatchingSignature},
		{"no signature", vectorSecret, headers(vectorTimestamp, ""), vectorPayload, webhooks.ErrMissingHeaders},
		{"bad timestamp", vectorSecret, func() http.Header {
			h := headers(0, vectorSignature)
			h.Set("webhook-timestamp", "yesterday")
			return h
		}(), vectorPayload, webhooks.ErrInvalidTimestamp},
		{"v2 only", vectorSecret, headers(vectorTimestamp, "v2,"+vectorSignature[3:]), vectorPayload, webhooks.ErrNoMatchingSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhooks.VerifyAt(tt.secret, tt.header, []byte(tt.body), 5*time.Minute, now)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("VerifyAt = %v, want %v", err, tt.want)
			}
		})
	}

	// Verify uses the real clock: a delivery signed just now passes, the
	// vector (signed in 2021) is too old.
	fresh := time.Now()
	sig := signer.Sign(vectorID, fresh, body)
	if err := webhooks.Verify(vectorSecret, headers(fresh.Unix(), sig), body, time.Minute); err != nil {
		t.Fatalf("fresh delivery: %v", err)
	}
	if err := webhooks.Verify(vectorSecret, headers(vectorTimestamp, vectorSignature), body, 0); !errors.Is(err, webhooks.ErrTimestampTooOld) {
		t.Fatalf("old delivery: %v", err)
	}
}
