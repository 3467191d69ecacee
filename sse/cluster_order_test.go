package sse

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/pgtest"
)

// Notifications of commits on PostgreSQL duplicated, delayed, reordered or
// lost, wake-ups at random, a buffer of two: every stream writes the log
// once, in order (the hand-over chain and the catch-up cover the rest).
func TestStreamsWriteTheLogOnceWhateverTheNotifications(t *testing.T) {
	r, store := perUserRig(t, Options{CatchUpEvery: 30 * time.Millisecond, Buffer: 2})
	const streams = 3
	var cs []*client
	for range streams {
		c := r.open("bob", "default", "")
		c.raw()
		c.raw()
		cs = append(cs, c)
	}
	const writers, each = 6, 40
	var wg, notes sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				user := "bob"
				if i%4 == 0 {
					user = fmt.Sprintf("other%d", w)
				}
				e := addEvent(t, store, user, w*1000+i)
				switch rand.IntN(6) {
				case 0: // lost
				case 1:
					r.hub.Committed([]calls.Event{e}, 0)
					r.hub.Committed([]calls.Event{e}, 0)
				case 2, 3:
					notes.Go(func() {
						time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
						r.hub.Committed([]calls.Event{e}, 0)
					})
				case 4:
					r.hub.Wake([]string{e.UserID})
					r.hub.Committed([]calls.Event{e}, 0)
				default:
					r.hub.Committed([]calls.Event{e}, 0)
				}
			}
		})
	}
	wg.Wait()
	notes.Wait()
	want, err := store.EventsAfter(context.Background(), "bob", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for s, c := range cs {
		for i, e := range want {
			b := c.next()
			if b.id != strconv.FormatInt(e.ID, 10) {
				t.Fatalf("stream %d event %d: id %s, want %d", s, i, b.id, e.ID)
			}
		}
	}
}

// Two stores (two nodes) on one database commit events for one user
// at once; a poller that reads after its position never passes over an id
// that commits later: a per-user id is taken under a lock held to the
// commit, so a stream that moved past id 7 never misses a 6 (db/postgres).
func TestNoIDVisibleBeforeASmallerOne(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	a := openDSN(t, dsn)
	b := openDSN(t, dsn)
	stop := make(chan struct{})
	var seen []int64
	var pos int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				list, _ := a.EventsAfter(context.Background(), "bob", pos, 10000)
				for _, e := range list {
					seen = append(seen, e.ID)
				}
				return
			default:
			}
			list, err := a.EventsAfter(context.Background(), "bob", pos, 10000)
			if err != nil {
				t.Error(err)
				return
			}
			for _, e := range list {
				seen = append(seen, e.ID)
				pos = e.ID
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 8 {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for i := range 60 {
				addEvent(t, s, "bob", w*1000+i)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-done
	all, err := a.EventsAfter(context.Background(), "bob", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(seen) {
		t.Fatalf("poller saw %d events, log holds %d", len(seen), len(all))
	}
	for i := range all {
		if all[i].ID != seen[i] {
			t.Fatalf("event %d: saw %d, log %d", i, seen[i], all[i].ID)
		}
	}
}
