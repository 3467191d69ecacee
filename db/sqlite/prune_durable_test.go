package sqlite

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/internal/wait"
)

// A prune is visible to the log's reads before its fsync returns (an
// OldestEventID past it is what decides a stream's reset), but a stream
// writes that reset only after reading its pending invitations
// (sse.stream.open), and that read returns only once every commit it
// could have seen, the prune included, is durable: a power cut cannot
// bring back events a client was told were gone. Pins the order the
// reset's safety rests on.
func TestPendingInvitationsAfterAPruneWaitForItsFsync(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var hold atomic.Bool
	entered, gate := make(chan struct{}, 16), make(chan struct{})
	open := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	real := s.syncWAL
	s.syncWAL = func() error {
		if hold.Load() {
			entered <- struct{}{}
			<-gate
		}
		return real()
	}
	for range 2 {
		if err := s.write(ctx, insertEvent("a")); err != nil {
			t.Fatal(err)
		}
	}
	hold.Store(true)
	pruned := make(chan error, 1)
	go func() {
		_, err := s.PruneEvents(ctx, 2) // both events (time 1)
		pruned <- err
	}()
	<-entered // the prune committed, its fsync held
	if oldest, err := s.OldestEventID(ctx); err != nil || oldest != 0 {
		t.Fatalf("OldestEventID during the prune's fsync = %d (%v), want 0: the prune is visible", oldest, err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.PendingInvitations(ctx, "a", 10)
		got <- err
	}()
	wait.For(t, 5*time.Second, "the read to wait for the prune's fsync", func() bool { return s.durableWaits.Load() > 0 })
	select {
	case err := <-got:
		t.Fatalf("PendingInvitations returned (%v) before the prune was durable", err)
	default:
	}
	open()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := <-pruned; err != nil {
		t.Fatal(err)
	}
}
