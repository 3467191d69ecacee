package sse

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"callsig/internal/fakeclock"
	"callsig/internal/wait"
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

// noHijack hides the connection from ServeEvents, as HTTP/2 does: the
// stream is served through the ResponseWriter (run), not taken over.
type noHijack struct{ http.ResponseWriter }

func (w noHijack) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

// A stream that cannot take its connection over keeps its token's timers
// too: on the hub's clock, the warning TokenWarning before exp, with the
// seconds left, then the end at exp.
func TestTokenExpiryWithoutTakeover(t *testing.T) {
	clk := fakeclock.New(time.UnixMilli(1_000_000_000))
	r := newRig(t, Options{Clock: clk, Heartbeat: time.Hour}, func(s *http.Server) {
		inner := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			inner.ServeHTTP(noHijack{w}, req)
		})
	})
	c := r.openQuery("user=bob&device=d&left="+(TokenWarning+10*time.Second).String(), "")
	if !slices.Contains(c.res.TransferEncoding, "chunked") {
		t.Fatalf("transfer encoding %v: the stream took its connection over", c.res.TransferEncoding)
	}
	c.raw() // opening
	c.raw() // head
	r.hub.Committed(r.log.add(changedEv("bob", "c1", "")), 0)
	if b := c.next(); b.id != "1" {
		t.Fatalf("got %+v, want event 1", b)
	}
	clk.Advance(9 * time.Second)
	r.hub.Committed(r.log.add(changedEv("bob", "c2", "")), 0)
	if b := c.next(); b.id != "2" { // not the warning: it is a second away
		t.Fatalf("got %+v, want event 2", b)
	}
	clk.Advance(time.Second)
	if b := c.next(); b.event != "tokenWillExpire" || b.data != fmt.Sprintf(`{"second":%d}`, int(TokenWarning/time.Second)) {
		t.Fatalf("got %+v, want the warning", b)
	}
	clk.Advance(TokenWarning - time.Second)
	r.hub.Committed(r.log.add(changedEv("bob", "c3", "")), 0)
	if b := c.next(); b.id != "3" { // still open a second before exp
		t.Fatalf("got %+v, want event 3", b)
	}
	clk.Advance(time.Second)
	c.ended()
	wait.For(t, 3*time.Second, "the stream gone", func() bool { return r.hub.Streams() == 0 })
}

// The wall clock steps forward past the token's exp (NTP, a VM resumed)
// while its timers, counting elapsed time, have an hour to go: the stream
// ends at its next wake-up, a heartbeat at most, taken over or not.
func TestTokenExpiryAfterTheClockStepped(t *testing.T) {
	for _, takeover := range []bool{true, false} {
		t.Run(fmt.Sprintf("takeover=%v", takeover), func(t *testing.T) {
			clk := fakeclock.NewSkewed(fakeclock.New(time.UnixMilli(1_000_000_000)), 0)
			var configure []func(*http.Server)
			if !takeover {
				configure = append(configure, func(s *http.Server) {
					inner := s.Handler
					s.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
						inner.ServeHTTP(noHijack{w}, req)
					})
				})
			}
			r := newRig(t, Options{Clock: clk, Heartbeat: 50 * time.Millisecond}, configure...)
			c := r.openQuery("user=bob&device=d&left=1h", "")
			c.raw() // opening
			c.raw() // head
			r.hub.Committed(r.log.add(changedEv("bob", "c1", "")), 0)
			if b := c.next(); b.id != "1" {
				t.Fatalf("got %+v, want event 1", b)
			}
			clk.Step(2 * time.Hour)
			c.ended()
		})
	}
}
