package sse

import (
	"fmt"
	"testing"

	"callsig/calls"
)

// The SSE write path, per event: encoding a committed event into its frame.
//
//	go test ./sse -run '^$' -bench . -benchmem
func BenchmarkEncodeEvent(b *testing.B) {
	data := []byte(`{"callID":"zk3vq9mt2xlp8rwn4byc7aaaaa","callUserList":[{"userID":"bob","state":"accepted","inviter":"alice","extendedData":"","updateTime":1767225612000}]}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = encodeEvent(123456, "callUserStateChanged", data)
	}
}

// The whole live path of one event: Hub.Committed → the stream's buffer →
// written to the (hijacked) connection → read and parsed by a client on
// loopback. One event in flight at a time, so ns/op is delivery latency.
func BenchmarkStreamDelivery(b *testing.B) {
	r := newRig(b, Options{})
	c := r.open("bob", "default", "")
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		evs := r.log.add(calls.Event{UserID: "bob", CallID: fmt.Sprint("c", i), Type: calls.EventUserStateChanged, Data: []byte(`{"callID":"c"}`)})
		r.hub.Committed(evs, 0)
		if blk := c.next(); blk.event != string(calls.EventUserStateChanged) {
			b.Fatalf("got %+v", blk)
		}
	}
}
