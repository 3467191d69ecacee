package calls

import (
	"crypto/rand"
	"encoding/base32"
)

var callIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewCallID returns an opaque, unguessable call ID: 128 random bits in
// lower-case base32 (26 characters), safe in URLs and paths.
func NewCallID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return callIDEncoding.EncodeToString(b[:])
}
