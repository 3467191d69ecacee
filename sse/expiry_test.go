package sse

import (
	"testing"
	"time"
)

// The warning is one block with the stream's position as id and the whole
// seconds left, rounded up.
func TestTokenWillExpireBlock(t *testing.T) {
	for _, tt := range []struct {
		last int64
		left time.Duration
		want string
	}{
		{1234, 30 * time.Second, "id: 1234\nevent: tokenWillExpire\ndata: {\"second\":30}\n\n"},
		{7, 29*time.Second + time.Millisecond, "id: 7\nevent: tokenWillExpire\ndata: {\"second\":30}\n\n"},
		{0, 9*time.Second + 400*time.Millisecond, "id: 0\nevent: tokenWillExpire\ndata: {\"second\":10}\n\n"},
		{5, -time.Second, "id: 5\nevent: tokenWillExpire\ndata: {\"second\":0}\n\n"},
	} {
		if got := string(tokenWillExpireBlock(tt.last, tt.left)); got != tt.want {
			t.Errorf("tokenWillExpireBlock(%d, %v) = %q, want %q", tt.last, tt.left, got, tt.want)
		}
	}
}
