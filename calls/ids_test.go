package calls

import (
	"strings"
	"testing"
	"time"
)

// Call IDs are 26 characters of lower-case base32, distinct, and sort in
// creation order from one millisecond to the next.
func TestNewCallID(t *testing.T) {
	seen := make(map[string]bool)
	for range 2000 {
		id := NewCallID()
		if len(id) != 26 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("ID %q: want 26 characters of lower-case base32", id)
		}
		if seen[id] {
			t.Fatalf("ID %q twice", id)
		}
		seen[id] = true
	}
	// Made a millisecond later, an ID sorts later, whatever its random part.
	var prev string
	for _, ms := range []int64{0, 1, 31, 32, 1023, 1024, time.Now().UnixMilli(), time.Now().UnixMilli() + 1, 1<<48 - 1} {
		for range 20 {
			if id := callIDAt(ms); id <= prev {
				t.Fatalf("ID %q of millisecond %d sorts before %q, made earlier", id, ms, prev)
			}
		}
		prev = callIDAt(ms)
		for range 20 { // and every ID of ms sorts before the next millisecond's
			prev = max(prev, callIDAt(ms))
		}
	}
	// Encoded, IDs sort as their bytes do: every 5-bit symbol sorts after
	// the one below it (the first character is the top 5 bits of byte 0).
	prev = ""
	for k := range 32 {
		var b [16]byte
		b[0] = byte(k << 3)
		id := callIDEncoding.EncodeToString(b[:])
		if id <= prev {
			t.Fatalf("symbol %d encodes %q, not after %q", k, id, prev)
		}
		prev = id
	}
	// The random part: two IDs of the same millisecond share at most their
	// time prefix (48 bits: the first 9 characters, the tenth in part).
	a, b := NewCallID(), NewCallID()
	if a[10:] == b[10:] {
		t.Fatalf("IDs %q and %q share their random part", a, b)
	}
}
