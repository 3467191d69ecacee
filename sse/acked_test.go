package sse

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"callsig/internal/wait"
)

// fakeAcks stands for the kernel's count of a connection's unacknowledged
// bytes (unackedBytes), as a client whose network went silent leaves them.
type fakeAcks struct {
	unacked atomic.Int64
	checks  atomic.Int64
}

func (a *fakeAcks) bytes(net.Conn) (int64, bool) {
	a.checks.Add(1)
	return a.unacked.Load(), true
}

// silentRig is a rig whose clients acknowledge nothing until told (acks).
func silentRig(t *testing.T) (*rig, *fakeAcks) {
	acks := &fakeAcks{}
	acks.unacked.Store(1 << 40)
	return newRig(t, Options{unackedBytes: acks.bytes}), acks
}

// wantNotDeliveredUntilAcked checks that report (an invitation's
// delivery) is not made while the stream looks at the acknowledgements
// and finds none (the first look is part of the flush), then is once the
// client acknowledges everything; want are all the reports then.
func (a *fakeAcks) wantNotDeliveredUntilAcked(t *testing.T, r *rig, report string, want ...string) {
	t.Helper()
	checks := a.checks.Load()
	wait.For(t, 5*time.Second, "the stream checks the acknowledgements again", func() bool { return a.checks.Load() >= checks+3 })
	if got := r.svc.list(); slices.Contains(got, report) {
		t.Fatalf("reports %q: an invitation whose bytes no one acknowledged counted as delivered", got)
	}
	a.unacked.Store(0)
	r.svc.waitReports(t, want...)
}

// wantNotDeliveredAtTheEnd checks that report is not made by the time the
// stream's end is reported (its user offline; the online report may be
// overtaken).
func wantNotDeliveredAtTheEnd(t *testing.T, r *rig, report string) {
	t.Helper()
	wait.For(t, 5*time.Second, "the stream's end reported", func() bool { return slices.Contains(r.svc.list(), "offline bob") })
	if got := r.svc.list(); slices.Contains(got, report) {
		t.Fatalf("reports %q: an invitation no one acknowledged counted as delivered", got)
	}
}

// An invitation counts as delivered once the client acknowledged its
// bytes, not once they are in the socket: a review blackholed an invitee's
// network and the invitation showed received at once, so the caller never
// saw notYetReceived and no push went out.
func TestInvitationIsDeliveredOnceAcknowledged(t *testing.T) {
	r, acks := silentRig(t)
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	c.next()
	acks.wantNotDeliveredUntilAcked(t, r, "delivered c1 bob", "online bob", "delivered c1 bob")
}

// A stream that ends with an invitation unacknowledged does not report it:
// the client may never have had it (it comes again with the pending
// invitations of its next stream).
func TestInvitationUnacknowledgedWhenTheStreamEndsIsNotDelivered(t *testing.T) {
	r, _ := silentRig(t)
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	c.next()
	c.close()
	r.svc.waitReports(t, "online bob", "offline bob")
}

// A client that acknowledges and closes at once (its FIN carries the ACK)
// had its invitation: the stream's end reads the count one last time. A
// review found it dropped, the invitee left inviting.
func TestInvitationAcknowledgedAsTheStreamEndsIsDelivered(t *testing.T) {
	r, acks := silentRig(t)
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	c.next()
	// Once the checks have backed off to ackMaxCheck, the next is far
	// off: the close is seen before it.
	checks := acks.checks.Load()
	wait.For(t, 5*time.Second, "the checks back off", func() bool { return acks.checks.Load() >= checks+8 })
	acks.unacked.Store(0)
	c.close()
	r.svc.waitReportSet(t, "online bob", "delivered c1 bob", "offline bob")
}

// Idle streams are many: the acknowledgement state is a pointer, made for
// the first invitation awaiting its ACK, and the stream stays in the size
// class it had before (480 bytes; the state's fields in the stream cost
// 96 bytes a stream).
func TestStreamKeepsItsSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(stream{}); size > 480 {
		t.Fatalf("a stream is %d bytes, over 480 (the next size class is 576)", size)
	}
}

// The pending invitations a new stream starts with count once
// acknowledged too: a phone whose network dies as it reconnects has not
// had them.
func TestReplayedInvitationIsDeliveredOnceAcknowledged(t *testing.T) {
	r, acks := silentRig(t)
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	r.log.pending["bob"] = []int64{1}
	r.log.unreceived["bob"] = []int64{1}
	c := r.open("bob", "d", "")
	c.raw() // opening
	if b := c.raw(); b.id != "1" || b.event == "" {
		t.Fatalf("%+v, want the pending invitation", b)
	}
	r.svc.waitReports(t, "online bob")
	acks.wantNotDeliveredUntilAcked(t, r, "delivered c1 bob", "online bob", "delivered c1 bob")
}

// A replayed invitation whose report waits on the read of which are still
// unreceived, when that read fails and the stream ends, counts as a live
// one: once acknowledged. The stream's end reported it, unacknowledged.
func TestReplayedInvitationWhoseReadFailedWaitsForItsAck(t *testing.T) {
	r, _ := silentRig(t)
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	r.log.pending["bob"] = []int64{1}
	r.log.unreceived["bob"] = []int64{1}
	r.log.unreceivedErr = errors.New("store down")
	c := r.open("bob", "d", "")
	c.raw() // opening
	c.raw() // the pending invitation; the read after it fails, the stream ends
	wantNotDeliveredAtTheEnd(t, r, "delivered c1 bob")
}

// leftWhileOpening runs a resume of two pages whose client leaves after
// the first page is out (c1, unreceived, in it), while the stream is
// still opening; acked says whether the client acknowledged it first. It
// returns the rig once the stream's end is reported.
func leftWhileOpening(t *testing.T, acked bool) *rig {
	var ackedNow atomic.Bool
	acks := func(c net.Conn) (int64, bool) {
		if _, ok := unackedBytes(c); !ok { // closed: the kernel tells nothing
			return 0, false
		}
		if ackedNow.Load() {
			return 0, true
		}
		return 1 << 40, true
	}
	left := make(chan struct{})
	r := newRig(t, Options{unackedBytes: acks, onDeserted: func() { close(left) }})
	for i := range pageSize + 10 {
		r.hub.Committed(r.log.add(inv("bob", fmt.Sprintf("c%d", i+1))), 0)
	}
	r.log.unreceived["bob"] = []int64{1}
	second, release := make(chan struct{}), make(chan struct{})
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 { // the catch-up's second page: the stream is opening
			close(second)
			<-release
		}
	}
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	<-second // the first page is out, c1 awaiting its ACK
	ackedNow.Store(acked)
	c.res.Body.Close()
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("serve never saw the client leave")
	}
	close(release)
	wait.For(t, 5*time.Second, "the stream's end reported", func() bool { return slices.Contains(r.svc.list(), "offline bob") })
	return r
}

// The client of a stream still opening leaves without acknowledging: its
// invitation is not reported. The opening's end asked a socket serve had
// closed, and a failed read was taken for "cannot tell": the writes
// counted, and an invitation the blackholed client never had was reported.
func TestReplayedInvitationOfAClientThatLeftWhileOpening(t *testing.T) {
	r := leftWhileOpening(t, false)
	if got := r.svc.list(); slices.Contains(got, "delivered c1 bob") {
		t.Fatalf("reports %q: a replayed invitation no one acknowledged counted as delivered", got)
	}
}

// A healthy client that acknowledged, then left while its stream was
// still opening, had its invitation: the opening's end reads the count on
// the socket, which serve no longer closes under it (a review: serve
// closed it, the read failed, and the report was dropped).
func TestReplayedInvitationAcknowledgedBeforeTheClientLeftWhileOpening(t *testing.T) {
	r := leftWhileOpening(t, true)
	wait.For(t, 5*time.Second, "c1 reported delivered", func() bool { return slices.Contains(r.svc.list(), "delivered c1 bob") })
}
