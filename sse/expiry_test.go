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

// On the system clock a hijacked stream's read deadline stands for the
// token's timers: with less than TokenWarning left the warning comes at
// once, with the seconds left, and the stream ends at exp. The heartbeat,
// an hour away, does not hold the deadline back.
func TestTokenExpiryOnTheSystemClock(t *testing.T) {
	r := newRig(t, Options{Heartbeat: time.Hour})
	start := time.Now()
	c := r.openQuery("user=bob&device=d&left=1500ms", "")
	c.raw() // opening
	c.raw() // head
	b := c.next()
	if b.event != "tokenWillExpire" || b.data != `{"second":2}` {
		t.Fatalf("got %+v, want the warning with 2 s left", b)
	}
	c.ended()
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Fatalf("the stream ended after %v, before its token's exp", d)
	}
	if r.hub.Streams() != 0 {
		t.Fatal("stream still registered")
	}

	// A warning not yet due comes when it is: the read deadline waits for
	// it, not for the heartbeat.
	start = time.Now()
	c = r.openQuery("user=bob&device=d&left="+(TokenWarning+500*time.Millisecond).String(), "")
	c.raw() // opening
	c.raw() // head
	if b := c.next(); b.event != "tokenWillExpire" {
		t.Fatalf("got %+v, want the warning", b)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("the warning came after %v, before it was due", d)
	}
}
