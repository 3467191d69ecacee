package sse

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/wait"
)

// A client that leaves while the heads stage has its stream (its head
// out, the stage not done) is ended by that stage: serve, which saw it
// leave, left the stream to the opener. Queued for a catch-up instead, it
// stayed subscribed, its user online, until a catch-up slot freed.
func TestDesertedDuringTheHeadsStageEnds(t *testing.T) {
	r := newRig(t, Options{IDOrder: PerUserIDOrder, MaxOpeners: 1, CatchUpEvery: time.Hour})
	r.log.pendingGate = newGate(16)
	defer close(r.log.pendingGate.hold)
	gl, srv := r.gatedServer(t, true)
	holdAnOpener(t, r) // her catch-up holds the one catch-up slot
	gl.mu.Lock()
	gl.gateNext = true
	gl.mu.Unlock()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /?user=bob&device=d HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-gl.entered: // bob's head is out; the heads stage holds his stream
	case <-time.After(3 * time.Second):
		t.Fatal("bob's head never written")
	}
	conn.Close() // the client leaves
	wait.For(t, 3*time.Second, "bob's serve to see the client leave", func() bool {
		return goroutinesIn("callsig/sse.(*stream).serve") == 1 // carol's only
	})
	close(gl.release) // the heads stage goes on
	wait.For(t, 3*time.Second, "bob offline", func() bool { return !r.hub.Online("bob") })
}

// heldHeadLog holds every NewestEventIDs until hold is closed, counting
// how many run at once.
type heldHeadLog struct {
	*memLog
	hold     chan struct{}
	in, most atomic.Int32
}

func (l *heldHeadLog) NewestEventIDs(ctx context.Context, users []string) (map[string]int64, error) {
	n := l.in.Add(1)
	defer l.in.Add(-1)
	for m := l.most.Load(); n > m && !l.most.CompareAndSwap(m, n); m = l.most.Load() {
	}
	select {
	case <-l.hold:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return l.memLog.NewestEventIDs(ctx, users)
}

// The heads stage reads streams' heads in turns of their own, a quarter of
// LogReaders (at least one): not in the catch-ups' turns, so headers do
// not wait for catch-ups, and not without a cap either, which let a burst
// of reconnections take the store's whole pool (64 head reads at once,
// where LogReaders keeps connections for API requests).
func TestHeadReadsTakeTurns(t *testing.T) {
	l := &heldHeadLog{memLog: newMemLog(), hold: make(chan struct{})}
	r := newRig(t, Options{Log: l, IDOrder: PerUserIDOrder, LogReaders: 1, MaxOpeners: 16, CatchUpEvery: time.Hour})
	defer close(l.hold)
	for i := range 4 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "GET /?user=u%d&device=d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	wait.For(t, 3*time.Second, "the four streams at their head reads", func() bool {
		return goroutinesIn("callsig/sse.(*stream).userHead") == 4
	})
	if got := l.most.Load(); got != 1 {
		t.Fatalf("%d head reads of the store at once, want 1 (a quarter of LogReaders, at least one)", got)
	}
}
