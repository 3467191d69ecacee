package webhooks

import (
	"strings"
	"testing"
)

// A receiver's answer is kept as a snippet in the delivery log: valid
// UTF-8, no control characters (a NUL could not be stored on PostgreSQL,
// and the outcome would never be recorded), whitespace folded, bounded.
func TestSnippet(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"plain", "  internal error \n", "internal error"},
		{"lines folded", "bad\r\n\tgateway", "bad gateway"},
		{"NUL and other controls", "a\x00b\x07c\x1bd", "a b c d"},
		{"invalid UTF-8", "a\xffb", "a\uFFFDb"},
		{"cut at 200 bytes on a rune", strings.Repeat("é", 150), strings.Repeat("é", 100) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := snippet([]byte(tc.body)); got != tc.want {
				t.Errorf("snippet(%q) = %q, want %q", tc.body, got, tc.want)
			}
		})
	}
}
