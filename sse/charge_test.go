package sse

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"callsig/calls"
)

// A stream replaying the log pays for what it writes (Charge, the user's
// rate limit) a page at a time, and waits what it owes before it reads the
// next page, heartbeats going on meanwhile: a user reconnecting in a loop
// from an old id replayed its whole kept log for one request's token each
// (a review: 8 MB/s within a limit that holds answers to 3.2 MB/s).
func TestReplayPaysForItsPages(t *testing.T) {
	r := newRig(t, Options{Heartbeat: 40 * time.Millisecond})
	var evs []calls.Event
	for i := range pageSize + 10 {
		evs = append(evs, inv("bob", fmt.Sprint("c", i)))
	}
	r.hub.Committed(r.log.add(evs...), 0)
	var mu sync.Mutex
	var charged []int
	const owed = 300 * time.Millisecond
	r.charge = func(n int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		charged = append(charged, n)
		if len(charged) == 1 {
			return owed
		}
		return 0
	}

	c := r.open("bob", "d", "0")
	if b := c.raw(); b.id != "0" {
		t.Fatalf("opening %+v, want the id repeated", b)
	}
	for i := range pageSize {
		if b := c.raw(); b.event != string(calls.EventReceived) {
			t.Fatalf("block %d of the first page: %+v", i, b)
		}
	}
	paid := time.Now()
	beats := 0
	for {
		b := c.raw()
		if b.comment && b.event == "" {
			beats++
			continue
		}
		if b.id != fmt.Sprint(pageSize+1) {
			t.Fatalf("after the first page: %+v, want event %d", b, pageSize+1)
		}
		break
	}
	// Heartbeats every 40 ms: a pause of 300 ms shows several between
	// the pages (none without it); the time is only roughly bounded (the
	// pause began when the page was written, before it was read here).
	if waited := time.Since(paid); waited < owed/3 || beats < 3 {
		t.Fatalf("the second page came %v after the first, with %d heartbeats between: want the %v owed, heartbeats going on", waited, beats, owed)
	}
	for range 9 {
		c.next()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(charged) != 2 || charged[0] < pageSize*20 || charged[1] <= 0 {
		t.Fatalf("charged %v bytes, want the two pages' bytes", charged)
	}
}
