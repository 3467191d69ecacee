package main

import (
	"bufio"
	"strings"
	"testing"
)

// The synced event that ends a new stream's opening is no event of the
// load: counted, it made every stream of the streams load report one
// event read where none was expected.
func TestReadPassesOverSynced(t *testing.T) {
	var got []string
	s := &sseStream{counters: &streamCounters{}, onEvent: func(_ *sseStream, ev *event) { got = append(got, ev.typ) }}
	in := "retry: 3000\n\nid: 7\nevent: synced\ndata: {}\n\nid: 8\nevent: callInvitationReceived\ndata: {\"callID\":\"c\"}\n\n"
	err := s.read(bufio.NewReader(strings.NewReader(in)))
	if n := s.counters.events.Load(); n != 1 || len(got) != 1 || got[0] != "callInvitationReceived" || s.lastID != 8 {
		t.Fatalf("read %q: %d events counted, handed %v, last id %d (%v); want the invitation only, last id 8", in, n, got, s.lastID, err)
	}
}
