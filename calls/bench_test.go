package calls

import (
	"testing"
	"time"
)

// The state machine's hot paths, pure (no I/O): what each invite and
// accept costs before storage.
//
//	go test ./calls -run '^$' -bench . -benchmem
func BenchmarkNewCall(b *testing.B) {
	cfg := Config{MaxCallUsers: 10, NotReceivedAfter: 5 * time.Second}
	in := InviteInput{Invitees: []string{"bob", "carol", "dave"}, ExtendedData: "video", PushConfig: &PushConfig{Title: "Alice"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := NewCall("zk3vq9mt2xlp8rwn4byc7aaaaa", Actor{UserID: "alice", Device: "phone"}, in, 1_000, cfg, true, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAccept(b *testing.B) {
	cfg := Config{MaxCallUsers: 10, NotReceivedAfter: 5 * time.Second}
	ch, _, err := NewCall("zk3vq9mt2xlp8rwn4byc7aaaaa", Actor{UserID: "alice"}, InviteInput{Invitees: []string{"bob", "carol", "dave"}}, 1_000, cfg, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Answer(ch.Call, Actor{UserID: "bob", Device: "phone"}, true, "ok", 2_000); err != nil {
			b.Fatal(err)
		}
	}
}

// Event encoding: one callInvitationReceived payload (the largest event,
// with the whole user list), encoded once per change and shared by its
// recipients.
func BenchmarkEncodeReceived(b *testing.B) {
	ch, _, err := NewCall("zk3vq9mt2xlp8rwn4byc7aaaaa", Actor{UserID: "alice"}, InviteInput{Invitees: []string{"bob", "carol", "dave"}}, 1_000, Config{MaxCallUsers: 10}, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	c := ch.Call
	data := receivedData{CallID: c.ID, Caller: c.Caller, Inviter: c.Caller, Mode: c.Mode, Timeout: c.Timeout,
		CreateTime: c.CreateTime, ExtendedData: c.ExtendedData, CallUserList: c.Info().CallUserList}
	b.ReportAllocs()
	for b.Loop() {
		_ = mustJSON(data)
	}
}
