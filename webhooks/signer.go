package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every signing secret: "whsec_" then the base64 of the
// HMAC key.
const SecretPrefix = "whsec_"

// MinKeyBytes is the shortest HMAC key a secret may carry; the specification
// asks for 24 to 64 random bytes.
const MinKeyBytes = 24

// secretKeyBytes is the size of the keys NewSecret generates.
const secretKeyBytes = 32

// ErrInvalidSecret is returned for a secret that is not "whsec_" followed by
// the standard base64 of at least MinKeyBytes bytes.
var ErrInvalidSecret = errors.New("webhooks: secret must be whsec_ followed by the base64 of at least 24 bytes")

// NewSecret returns a fresh signing secret: whsec_ and the base64 of 32
// random bytes.
func NewSecret() string {
	var key [secretKeyBytes]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never fails on supported platforms
	return SecretPrefix + base64.StdEncoding.EncodeToString(key[:])
}

// ParseSecret returns the HMAC key of a secret. The whsec_ prefix may be
// left out, as the specification's libraries allow.
func ParseSecret(secret string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(key) < MinKeyBytes {
		return nil, ErrInvalidSecret
	}
	return key, nil
}

// Signer signs webhook messages with one endpoint's secret.
type Signer struct {
	key []byte
}

// NewSigner returns the signer of a whsec_ secret.
func NewSigner(secret string) (*Signer, error) {
	key, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key}, nil
}

// Sign returns the webhook-signature value of a message: "v1," and the
// base64 HMAC-SHA256 of "msgID.timestamp.body", timestamp in Unix seconds.
func (s *Signer) Sign(msgID string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(sign(s.key, msgID, ts.Unix(), body))
}

// Headers returns the three Standard Webhooks headers of a message sent at
// ts.
func (s *Signer) Headers(msgID string, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set(HeaderID, msgID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.Sign(msgID, ts, body))
	return h
}

// sign is the raw HMAC of the signed content.
func sign(key []byte, msgID string, unix int64, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", msgID, unix)
	mac.Write(body)
	return mac.Sum(nil)
}

// encodeKey is the base64 form of a key inside a whsec_ secret.
func encodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }
