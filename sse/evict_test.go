package sse

import (
	"testing"
	"time"

	"callsig/calls"
)

// A new stream (no Last-Event-ID) evicted at the per-user cap while it is
// still opening (before its id-only block) ends at once, as the cap wants,
// but with a reset: its client holds no position, and coming back as a
// new stream it would miss, without a word, what was committed for the
// user after the first stream subscribed (its own callInvitationCreated,
// say). It used to end with nothing.
func TestEvictedOpeningStreamEndsWithAReset(t *testing.T) {
	r := newRig(t, Options{MaxStreamsPerUser: 1})
	r.log.pendingGate = newGate(16)
	a := r.open("bob", "tab1", "") // headers and "retry:" out, pending read held
	select {
	case <-r.log.pendingGate.entered:
	case <-time.After(3 * time.Second):
		t.Fatal("stream a never read its pending invitations")
	}
	// The user creates a call: the event reaches a's buffer (subscribed).
	r.hub.Committed(r.log.add(calls.Event{UserID: "bob", CallID: "c1", Type: calls.EventCreated}), 0)

	r.open("bob", "tab2", "") // the cap is 1: a, the oldest, is evicted
	a.ended()                 // at once: its pending read is still held
	close(r.log.pendingGate.hold)
	aLast, reset := "", false
	for blk := range a.blocks { // what a's client parsed before the end
		if blk.id != "" {
			aLast = blk.id
		}
		reset = reset || blk.event == "reset"
	}
	if !reset && aLast == "" {
		t.Fatal("tab1 was evicted while opening and ended holding no position and no reset: c1 (id 1, committed while it " +
			"was open) would never reach its client, which comes back as a new stream")
	}
}
