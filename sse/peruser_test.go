package sse

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/db/storetest"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
)

// The hub in PerUserIDOrder on a real PostgreSQL store, whose ids follow
// each user's commit order only.

// openPostgres opens a store on a fresh database, closed with the test.
func openPostgres(t *testing.T) *postgres.Store {
	t.Helper()
	return openDSN(t, pgtest.NewDatabase(t))
}

// openDSN opens a store (a node) on the database at dsn, closed with the
// test.
func openDSN(t *testing.T, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// perUserRig is a rig in PerUserIDOrder on a PostgreSQL store.
func perUserRig(t *testing.T, o Options) (*rig, *postgres.Store) {
	t.Helper()
	store := openPostgres(t)
	o.Log, o.IDOrder = store, PerUserIDOrder
	if o.LogReaders == 0 {
		o.LogReaders = 4
	}
	return newRig(t, o), store
}

// event returns a change to call id adding one event for user.
func addEvent(t *testing.T, store *postgres.Store, user string, n int) calls.Event {
	t.Helper()
	ch := storetest.NewCall(fmt.Sprintf("%s-%d", user, n), "caller", time.Now().UnixMilli(), user)
	ch.Events[0].Type = calls.EventUserStateChanged
	ch.Events[0].Data = json.RawMessage(`{"n":` + strconv.Itoa(n) + `}`)
	storetest.Save(t, store, ch)
	return ch.Events[0]
}

// Many writers commit events for one user at once; their commit
// notifications come in any order, some never. The stream writes every
// event of the user once, in id order, and the ids are those of the log.
func TestPerUserOrderWritesEveryEventOnceInOrder(t *testing.T) {
	r, store := perUserRig(t, Options{CatchUpEvery: 50 * time.Millisecond})
	c := r.open("bob", "default", "")
	if b := c.raw(); b.id != "" {
		t.Fatalf("opening block %+v", b)
	}
	if b := c.raw(); b.id != "0" {
		t.Fatalf("id block %+v, want id 0 (bob has no events yet)", b)
	}
	const writers, each = 8, 15
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				user := "bob"
				if i%3 == 0 {
					user = fmt.Sprintf("other%d", w) // ids in between for others
				}
				e := addEvent(t, store, user, w*100+i)
				if rand.IntN(10) > 0 { // one in ten is never reported
					r.hub.Committed([]calls.Event{e}, 0)
				}
			}
		})
	}
	wg.Wait()
	want, err := store.EventsAfter(context.Background(), "bob", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != writers*each*2/3 {
		t.Fatalf("log holds %d events of bob", len(want))
	}
	for i, e := range want {
		b := c.next()
		if b.id != strconv.FormatInt(e.ID, 10) {
			t.Fatalf("event %d: id %s, want %d (the log's order)", i, b.id, e.ID)
		}
	}
}

// An event committed elsewhere reaches the stream on Wake, without a
// local commit notification and long before the periodic catch-up.
func TestPerUserWakeReadsTheLog(t *testing.T) {
	r, store := perUserRig(t, Options{CatchUpEvery: time.Hour})
	c := r.open("bob", "default", "")
	c.raw()
	c.raw()
	e := addEvent(t, store, "bob", 1)
	r.hub.Wake([]string{"nobody-here", "bob"})
	if b := c.next(); b.id != strconv.FormatInt(e.ID, 10) {
		t.Fatalf("got %+v, want event %d", b, e.ID)
	}
}

// Without any notification (a wake-up lost), the periodic catch-up finds
// the stream behind the log, wakes it and counts it.
func TestPerUserCatchUpFindsMissedEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, store := perUserRig(t, Options{CatchUpEvery: 20 * time.Millisecond, Registerer: reg})
	c := r.open("bob", "default", "")
	c.raw()
	c.raw()
	e := addEvent(t, store, "bob", 1)
	if b := c.next(); b.id != strconv.FormatInt(e.ID, 10) {
		t.Fatalf("got %+v, want event %d", b, e.ID)
	}
	if n := counter(r.hub.m.missed); n < 1 {
		t.Errorf("callsig_sse_catchup_missed_total = %v, want at least 1", n)
	}
}

// A new stream starts at its user's newest id (not the log's global
// head), after the user's pending invitations; resuming from that id needs
// no reset, and an id above it (none this user was given) is a reset.
func TestPerUserStreamStartsAtTheUsersHead(t *testing.T) {
	r, store := perUserRig(t, Options{CatchUpEvery: time.Hour})
	inv := storetest.NewCall("c1", "alice", time.Now().UnixMilli(), "bob")
	storetest.Save(t, store, inv)
	addEvent(t, store, "carol", 1) // a higher id, of someone else
	c := r.open("bob", "default", "")
	c.raw() // opening block
	if b := c.next(); b.id != strconv.FormatInt(inv.Events[0].ID, 10) || b.event != string(calls.EventReceived) {
		t.Fatalf("first event %+v, want the pending invitation %d", b, inv.Events[0].ID)
	}
	head := inv.Events[0].ID
	c.close()

	again := r.open("bob", "default", strconv.FormatInt(head, 10))
	if b := again.raw(); b.id != strconv.FormatInt(head, 10) {
		t.Fatalf("resumed opening block %+v", b)
	}
	e := addEvent(t, store, "bob", 2)
	r.hub.Committed([]calls.Event{e}, 0)
	if b := again.next(); b.id != strconv.FormatInt(e.ID, 10) {
		t.Fatalf("resumed stream got %+v, want %d (no reset)", b, e.ID)
	}
	again.close()

	ahead := r.open("bob", "default", strconv.FormatInt(e.ID+1000, 10))
	if b := ahead.next(); b.event != "reset" {
		t.Fatalf("stream resumed past bob's newest id got %+v, want reset", b)
	}
}

// countingLog counts EventsAfter reads per user.
type countingLog struct {
	Log
	mu    sync.Mutex
	reads map[string]int
}

func (l *countingLog) EventsAfter(ctx context.Context, user string, after int64, limit int) ([]calls.Event, error) {
	l.mu.Lock()
	l.reads[user]++
	l.mu.Unlock()
	return l.Log.EventsAfter(ctx, user, after, limit)
}

func (l *countingLog) readsOf(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads[user]
}

// A committed event that names as its predecessor (Event.After) the last
// one the stream has goes to the stream as it is: after the first event,
// which the stream reads from the log, a chain of commits reported in
// order costs no log read. An event whose predecessor the stream has not
// seen (a commit reported late, or never) sends it to the log, which
// writes what was skipped, in order, once.
func TestPerUserHandsOverEventsThatFollowOn(t *testing.T) {
	store := openPostgres(t)
	counted := &countingLog{Log: store, reads: map[string]int{}}
	r := newRig(t, Options{Log: counted, IDOrder: PerUserIDOrder, LogReaders: 4, CatchUpEvery: time.Hour})
	c := r.open("bob", "default", "")
	c.raw()
	c.raw()
	first := addEvent(t, store, "bob", 0)
	if first.After != 0 {
		t.Fatalf("bob's first event has After %d, want 0 (none before it)", first.After)
	}
	r.hub.Committed([]calls.Event{first}, 0)
	if b := c.next(); b.id != strconv.FormatInt(first.ID, 10) {
		t.Fatalf("got %+v, want event %d", b, first.ID)
	}
	readsBefore := counted.readsOf("bob")
	prev := first
	for n := 1; n <= 20; n++ {
		e := addEvent(t, store, "bob", n)
		if e.After != prev.ID {
			t.Fatalf("event %d has After %d, want %d (bob's previous)", e.ID, e.After, prev.ID)
		}
		r.hub.Committed([]calls.Event{e}, 0)
		if b := c.next(); b.id != strconv.FormatInt(e.ID, 10) || !strings.Contains(b.data, fmt.Sprintf(`"n":%d`, n)) {
			t.Fatalf("got %+v, want event %d (n %d)", b, e.ID, n)
		}
		prev = e
	}
	if got := counted.readsOf("bob") - readsBefore; got != 0 {
		t.Errorf("%d log reads for 20 events that each followed on, want 0", got)
	}

	// Three commits; the middle one is reported last, the first never.
	var gap []calls.Event
	for n := 21; n <= 23; n++ {
		gap = append(gap, addEvent(t, store, "bob", n))
	}
	r.hub.Committed(gap[2:], 0) // follows gap[1], which the stream lacks: read
	for _, e := range gap {
		if b := c.next(); b.id != strconv.FormatInt(e.ID, 10) {
			t.Fatalf("got %+v, want event %d (the log's order)", b, e.ID)
		}
	}
	r.hub.Committed(gap[1:2], 0) // late: already written from the log
	last := addEvent(t, store, "bob", 24)
	r.hub.Committed([]calls.Event{last}, 0)
	if b := c.next(); b.id != strconv.FormatInt(last.ID, 10) {
		t.Fatalf("got %+v, want event %d, each event once", b, last.ID)
	}
}

// A live stream reading the log (with PerUserIDOrder, its first delivery
// after opening) sees its client leave: it ends, and the user goes
// offline, at once, not once the read (up to ReadTimeout), or the wait
// for a turn (unbounded), is over and its write fails. Nobody read the
// connection meanwhile.
func TestLiveStreamReadingTheLogSeesItsClientLeave(t *testing.T) {
	r := newRig(t, Options{IDOrder: PerUserIDOrder, CatchUpEvery: time.Hour})
	r.log.afterGate = newGate(16)
	defer close(r.log.afterGate.hold)
	c := r.open("bob", "d", "")
	c.raw() // opening
	c.raw() // synced
	r.hub.Committed(r.log.add(calls.Event{UserID: "bob", CallID: "c1", Type: calls.EventUserStateChanged}), 0)
	select {
	case <-r.log.afterGate.entered: // the stream reads the log, held
	case <-time.After(3 * time.Second):
		t.Fatal("the stream never read the log")
	}
	c.close() // the client leaves
	wait.For(t, 3*time.Second, "bob offline", func() bool { return !r.hub.Online("bob") })
}

// With PerUserIDOrder a stream's headers follow a read of the user's
// newest id, and yet go out at once (the contract's "the headers are sent
// at once"): not after other streams' catch-ups, which hold the one turn to
// read the log (LogReaders) and the one catch-up slot (MaxOpeners), as a
// burst of reconnections does. They waited for both.
func TestPerUserHeadersDoNotWaitForOtherStreamsCatchUps(t *testing.T) {
	r := newRig(t, Options{IDOrder: PerUserIDOrder, LogReaders: 1, MaxOpeners: 1, CatchUpEvery: time.Hour})
	r.log.pendingGate = newGate(16)
	defer close(r.log.pendingGate.hold)
	holdAnOpener(t, r) // her catch-up holds the turn and the slot
	for _, user := range []string{"bob", "dave"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /?user=%s&device=d HTTP/1.1\r\nHost: x\r\n\r\n", user)
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
			t.Fatalf("%s's stream: no response head (%v) while carol's catch-up holds the turn", user, err)
		}
	}
}
