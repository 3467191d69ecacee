package sse

import (
	"context"
	"log/slog"
	"strings"
	"testing"
)

// A user is online while it has a stream; the first open and last close
// are reported, and a flushed invitation is reported delivered once even
// when two streams got it.
func TestPresenceAndDeliveryReports(t *testing.T) {
	r := newRig(t, Options{})
	a := r.open("bob", "phone", "")
	r.svc.waitReports(t, "online bob")
	b := r.open("bob", "laptop", "")
	if !r.hub.Online("bob") || r.hub.Online("carol") {
		t.Fatal("presence wrong")
	}
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	a.next()
	b.next()
	r.svc.waitReports(t, "online bob", "delivered c1 bob")
	a.close()
	b.close()
	r.svc.waitReports(t, "online bob", "delivered c1 bob", "offline bob")
	if r.hub.Online("bob") || r.hub.Streams() != 0 {
		t.Fatal("still online")
	}
}

// Presence reports follow the transitions: an offline overtaken by a
// reconnection is not reported, and every transition to online is (the
// caller may have created calls while it looked offline).
func TestPresenceReportsCoalesce(t *testing.T) {
	rec := newRecorder()
	w := newWork(slog.New(slog.DiscardHandler), rec, nil)
	ctx := context.Background()
	drain := func() {
		for w.step(ctx) {
		}
	}
	w.presence("a", true)
	w.presence("a", false)
	drain()
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("a blip before any report: %q", got)
	}
	w.presence("a", true)
	drain()
	w.presence("a", false)
	w.presence("a", true)
	drain()
	w.presence("a", false)
	drain()
	if got, want := strings.Join(rec.list(), "|"), "online a|online a|offline a"; got != want {
		t.Fatalf("reports %q, want %q", got, want)
	}
	if len(w.users) != 0 {
		t.Fatalf("state kept for offline users: %v", w.users)
	}
}
