package sse

import (
	"context"
	"testing"
	"time"

	"callsig/calls"
)

// Pruning between a resuming stream's expiry check (stream.expired) and
// its catch-up's first read must not make it skip events silently: it
// either writes them or sends reset. It skipped them: the check had seen
// nothing pruned after the client's id, and the read came after the
// pruner (stream.resumeFrom now reads the oldest id after the page).
func TestResumeSeesPruningAfterItsExpiryCheck(t *testing.T) {
	r := newRig(t, Options{}) // Retention 24h: the hub's own pruner keeps these
	old := time.Now().Add(-time.Hour).UnixMilli()
	r.log.add(
		calls.Event{UserID: "alice", CallID: "c0", Type: calls.EventUserStateChanged, Time: old}, // id 1
		calls.Event{UserID: "bob", CallID: "c1", Type: calls.EventUserStateChanged, Time: old},   // id 2
		calls.Event{UserID: "bob", CallID: "c2", Type: calls.EventUserStateChanged},              // id 3
	)
	// The hub was made before the events were added: tell it (in order).
	r.hub.mu.Lock()
	r.hub.next = 4
	r.hub.mu.Unlock()

	r.log.afterGate = newGate(4)
	// bob resumes from 1 (the oldest id kept is 1: nothing after 1 pruned).
	c := r.open("bob", "d", "1")
	select {
	case <-r.log.afterGate.entered: // past the expiry check, in the catch-up read
	case <-time.After(5 * time.Second):
		t.Fatal("the catch-up never read the log")
	}
	// The pruner runs now (a retention cut-off that takes ids 1 and 2).
	if _, err := r.log.PruneEvents(context.Background(), time.Now().Add(-time.Minute).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	close(r.log.afterGate.hold)

	b := c.next()
	switch {
	case b.event == "reset":
		// right: the client learns it must reload
	case b.id == "2":
		// right too (had the read seen it)
	default:
		t.Fatalf("resumed from 1 while id 2 (bob's) was pruned: first event %+v, want reset (or id 2); event 2 was skipped silently", b)
	}
}

// dropOldest removes the log's n oldest events, as one batch of the
// pruner does (db.InBatches: a transaction per batch, in id order).
func (l *memLog) dropOldest(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = l.events[min(n, len(l.events)):]
}

// A pruning run is a series of batches. One that ran just before a
// resuming stream's page was read (taking bob's event 2) and one just
// after, emptying the log, left OldestEventID at 0 — an empty log, not
// "pruned past the client" — so the stream wrote the page from event 3 on
// without a reset and event 2 was skipped silently. It must reset (or
// write event 2). Found by a review, which reproduced it through HTTP: a
// server back after a day down prunes everything at once while every
// client resumes.
func TestResumeSeesABatchedPruneEmptyTheLog(t *testing.T) {
	r := newRig(t, Options{})
	old := time.Now().Add(-time.Hour).UnixMilli()
	r.log.add(
		calls.Event{UserID: "alice", CallID: "c0", Type: calls.EventUserStateChanged, Time: old}, // 1
		calls.Event{UserID: "bob", CallID: "c1", Type: calls.EventUserStateChanged, Time: old},   // 2
		calls.Event{UserID: "bob", CallID: "c2", Type: calls.EventUserStateChanged, Time: old},   // 3
		calls.Event{UserID: "bob", CallID: "c3", Type: calls.EventUserStateChanged, Time: old},   // 4
	)
	r.hub.mu.Lock()
	r.hub.next = 5
	r.hub.mu.Unlock()
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 1 { // the first batch, before the page: ids 1 and 2
			r.log.dropOldest(2)
		}
	}
	r.log.onOldest = func(n int) {
		if n == 2 { // 1: the expiry check; 2: after the page. The rest goes.
			r.log.dropOldest(100)
		}
	}
	r.log.mu.Unlock()

	c := r.open("bob", "d", "1")
	if b := c.raw(); b.id != "1" {
		t.Fatalf("opening %+v", b)
	}
	switch b := c.next(); {
	case b.event == "reset", b.id == "2":
	default:
		t.Fatalf("resumed from 1 while bob's event 2 was pruned before the page was read: first event %+v, want reset (or id 2)", b)
	}
}

// The same between two pages of a long catch-up: the stream must end
// (errPrunedBehind, its client then resumes and is told to reset) rather
// than write the second page over the hole.
func TestCatchUpSeesABatchedPruneEmptyTheLog(t *testing.T) {
	r := newRig(t, Options{})
	old := time.Now().Add(-time.Hour).UnixMilli()
	var evs []calls.Event
	for range pageSize + 10 {
		evs = append(evs, calls.Event{UserID: "bob", CallID: "c", Type: calls.EventUserStateChanged, Time: old})
	}
	r.log.add(evs...)
	r.hub.mu.Lock()
	r.hub.next = int64(pageSize + 11)
	r.hub.mu.Unlock()
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 { // before page 2 is read: ids up to pageSize+5 go
			r.log.dropOldest(pageSize + 5)
		}
	}
	r.log.onOldest = func(n int) {
		if n == 3 { // 1: the expiry check; 2: after page 1; 3: after page 2
			r.log.dropOldest(1000)
		}
	}
	r.log.mu.Unlock()

	c := r.open("bob", "d", "0")
	if b := c.raw(); b.id != "0" {
		t.Fatalf("opening %+v", b)
	}
	var last string
	for range pageSize {
		last = c.next().id
	}
	for {
		select {
		case b, ok := <-c.blocks:
			if !ok {
				return // ended: the client resumes from its last id and resets
			}
			if b.event != "" {
				t.Fatalf("after id %s: %+v; ids %d..%d were pruned before page 2 was read and skipped silently", last, b, pageSize+1, pageSize+5)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream still open after id %s, and nothing more", last)
		}
	}
}
