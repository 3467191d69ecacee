package sse

import (
	"fmt"
	"strconv"
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

// The wait a replay's last page owed was kept past the catch-up and served
// before the next log read, whatever time had passed since, and with
// PerUserIDOrder (PostgreSQL) every event another node commits reaches the
// stream by such a read (Wake, catchUp): a live event, which is never
// counted, was charged and delayed by a debt long since refilled (a
// review).
func TestLiveEventAfterReplayIsNotCharged(t *testing.T) {
	r := newRig(t, Options{IDOrder: PerUserIDOrder, CatchUpEvery: time.Hour, LogReaders: 4})
	r.log.add(inv("bob", "c0"))
	var mu sync.Mutex
	var charged []int
	const owed = 1500 * time.Millisecond
	r.charge = func(n int) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		charged = append(charged, n)
		if len(charged) == 1 {
			return owed // the bucket below zero right after the replay
		}
		return 0
	}
	c := r.open("bob", "d", "0") // resumes: a replay of one event, charged
	c.next()
	time.Sleep(owed + 300*time.Millisecond) // the debt is refilled by now
	e := r.log.add(inv("bob", "c1"))[0]     // committed on another node
	start := time.Now()
	r.hub.Wake([]string{"bob"})
	b := c.next()
	took := time.Since(start)
	if b.id != strconv.FormatInt(e.ID, 10) {
		t.Fatalf("got %+v", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if took > owed/2 || len(charged) > 1 {
		t.Fatalf("a live event woken %v after the replay's debt was refilled took %v to arrive; charges %v (live events are not to be counted)", owed+300*time.Millisecond, took.Round(10*time.Millisecond), charged)
	}
}

// A replay's pause gives up its catch-up slot (Options.MaxOpeners), as a
// blocked write does: a slot is held for reading and writing, never for
// waiting, and a few users over their share, resuming from old ids, held
// every slot while every other user's new stream waited (a review).
func TestReplayPauseDoesNotHoldOthersOpening(t *testing.T) {
	r := newRig(t, Options{MaxOpeners: 1, Heartbeat: time.Hour})
	var evs []calls.Event
	for i := range pageSize + 10 {
		evs = append(evs, inv("bob", fmt.Sprint("c", i)))
	}
	r.hub.Committed(r.log.add(evs...), 0)
	const owed = 2 * time.Second
	r.charge = func(n int) time.Duration { return owed } // bob is over his share
	r.open("bob", "d", "0")
	// bob's opener pauses before his second page.
	for counter(r.hub.m.replayWaits) < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	carol := r.open("carol", "d", "") // a new stream, nothing to replay
	carol.raw()                       // the opening block, from the handler
	b := carol.raw()
	took := time.Since(start)
	t.Logf("carol synced after %v", took)
	if b.event != "synced" || took > owed/2 {
		t.Fatalf("carol's synced event %+v came %v after she opened: her opening waited for bob's pause", b, took.Round(10*time.Millisecond))
	}
}

// A page written from the log and charged went out only after the pause it
// owed (left in the stream's buffer, under flushAt): the client has paid
// for it (a review).
func TestPausedReplayFlushesWhatItWrote(t *testing.T) {
	r := newRig(t, Options{Heartbeat: time.Hour})
	var evs []calls.Event
	for i := range pageSize + 10 {
		evs = append(evs, inv("bob", fmt.Sprint("c", i)))
	}
	r.hub.Committed(r.log.add(evs...), 0)
	const owed = 2 * time.Second
	r.charge = func(n int) time.Duration { return owed }
	start := time.Now()
	bob := r.open("bob", "d", "0")
	bob.next()
	if took := time.Since(start); took > owed/2 {
		t.Fatalf("the first replayed event came %v after the open: the written page waited out the pause in the buffer", took.Round(10*time.Millisecond))
	}
}
