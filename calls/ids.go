package calls

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// callIDEncoding is lower-case base32 with its alphabet in ASCII order, so
// that IDs sort as the bytes they encode do.
var callIDEncoding = base32.NewEncoding("234567abcdefghijklmnopqrstuvwxyz").WithPadding(base32.NoPadding)

// NewCallID returns an opaque, unguessable call ID: 128 bits in lower-case
// base32 (26 characters), safe in URLs and paths. The first 48 bits are the
// wall clock's Unix milliseconds and the other 80 are random.
//
// The time comes first so that a new ID sorts after the older ones: each
// backend's unique index on calls.id then takes new calls at its right
// edge, a page or two per commit, where random IDs touched a page per call
// (a tenth of SQLite's WAL frames under load, see docs/benchmarks.md). 80
// random bits keep the ID unguessable; the millisecond it shows is within
// the call's createTime, which the call's users see anyway.
func NewCallID() string { return callIDAt(time.Now().UnixMilli()) }

// callIDAt is a call ID made at Unix millisecond ms.
func callIDAt(ms int64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(ms)<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails on supported platforms
	return callIDEncoding.EncodeToString(b[:])
}
