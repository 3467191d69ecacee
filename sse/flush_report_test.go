package sse

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/wait"
)

// backlogAcrossAFlush fills the log with a replay whose first page writes
// about 15 KiB of state changes for bob's device, then the invitation
// "cinv" (its frame takes the stream's buffer past flushAt, so writing it
// flushes), then events for another device (nothing written) up to a full
// page, and a second page: the catch-up reads the log again after it.
func backlogAcrossAFlush(r *rig) {
	pad := strings.Repeat("x", 1000)
	var evs []calls.Event
	for i := range 15 {
		e := changedEv("bob", fmt.Sprint("c", i), "")
		e.Data = json.RawMessage(`{"callID":"c` + fmt.Sprint(i) + `","pad":"` + pad + `"}`)
		evs = append(evs, e)
	}
	e := inv("bob", "cinv")
	e.Data = json.RawMessage(`{"callID":"cinv","pad":"` + pad + `"}`)
	evs = append(evs, e)
	for i := len(evs); i < pageSize+10; i++ {
		evs = append(evs, changedEv("bob", fmt.Sprint("o", i), "other"))
	}
	added := r.log.add(evs...)
	r.hub.Committed(added, 0)
	// Still inviting: a replay reports only those (see reportReplayed).
	r.log.unreceived["bob"] = []int64{added[15].ID}
}

// An invitation whose frame is what takes a stream's buffer past flushAt
// goes out with that flush, and is reported delivered with it: not at
// some later flush (here the end of a catch-up whose next page's read is
// held, as a slow store or a queue for the read turns holds it).
func TestInvitationCrossingTheFlushIsReportedWithIt(t *testing.T) {
	r := newRig(t, Options{})
	backlogAcrossAFlush(r)
	release := make(chan struct{})
	defer close(release)
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 { // the second page's read
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
	}
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	for {
		if b := c.next(); b.event == string(calls.EventReceived) {
			break
		}
	}
	if !wait.Until(2*time.Second, func() bool { return slices.Contains(r.svc.list(), "delivered cinv bob") }) {
		t.Fatalf("client holds invitation cinv, reports %q: its delivery waits for a later flush", r.svc.list())
	}
}

// The same invitation is reported even when the stream ends before any
// later flush (the next page's read fails): its bytes went out.
func TestInvitationCrossingTheFlushIsReportedWhenTheStreamEnds(t *testing.T) {
	r := newRig(t, Options{})
	backlogAcrossAFlush(r)
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 {
			r.log.mu.Lock()
			r.log.afterErr = errors.New("db: no such table: events")
			r.log.mu.Unlock()
		}
	}
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	for {
		if b := c.next(); b.event == string(calls.EventReceived) {
			break
		}
	}
	c.ended()
	wait.For(t, 2*time.Second, "the delivery of cinv", func() bool { return slices.Contains(r.svc.list(), "delivered cinv bob") })
}

// A replayed invitation whose bytes went out is reported when the stream
// ends before the read that tells which of them are still unreceived
// (here it fails): its client may have it, and a report is idempotent.
func TestReplayedInvitationIsReportedWhenTheStreamEndsBeforeItsRead(t *testing.T) {
	r := newRig(t, Options{})
	backlogAcrossAFlush(r)
	r.log.mu.Lock()
	r.log.unreceivedErr = errors.New("db: no such table: call_users")
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	for {
		if b := c.next(); b.event == string(calls.EventReceived) {
			break
		}
	}
	c.ended()
	wait.For(t, 2*time.Second, "the delivery of cinv", func() bool { return slices.Contains(r.svc.list(), "delivered cinv bob") })
}
