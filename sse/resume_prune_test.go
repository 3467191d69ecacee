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
