package webhooks

import (
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far webhook-timestamp may be from now when Verify
// is given no tolerance: the specification's libraries use five minutes.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify; match them with errors.Is.
var (
	ErrMissingHeaders      = errors.New("webhooks: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrInvalidTimestamp    = errors.New("webhooks: webhook-timestamp is not Unix seconds")
	ErrTimestampTooOld     = errors.New("webhooks: webhook-timestamp is too old")
	ErrTimestampTooNew     = errors.New("webhooks: webhook-timestamp is in the future")
	ErrNoMatchingSignature = errors.New("webhooks: no matching signature")
)

// Verify checks a received webhook the way a Standard Webhooks receiver
// must: the headers are present, webhook-timestamp is within tolerance of
// now (tolerance <= 0: DefaultTolerance), and one of the space-separated
// v1 signatures of webhook-signature matches body under secret (constant
// time). body must be the raw bytes received, before any JSON decoding.
func Verify(secret string, header http.Header, body []byte, tolerance time.Duration) error {
	return VerifyAt(secret, header, body, tolerance, time.Now())
}

// VerifyAt is Verify with the current time given, for receivers on an
// injected clock.
func VerifyAt(secret string, header http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	key, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	id, ts, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	// Comparing in whole seconds, as the header is: no rounding surprises.
	switch tol := int64(tolerance / time.Second); {
	case now.Unix()-unix > tol:
		return ErrTimestampTooOld
	case unix-now.Unix() > tol:
		return ErrTimestampTooNew
	}
	want := sign(key, id, unix, body)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrNoMatchingSignature
}
