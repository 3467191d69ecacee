package sse

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/wait"
)

// The headers and the opening block arrive at once, before the pending
// invitations are read; the invitations follow when the read returns.
func TestHeadersBeforeTheCatchUp(t *testing.T) {
	r := newRig(t, Options{})
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	r.log.pending["bob"] = []int64{1}
	r.log.pendingGate = newGate(1)
	opened := make(chan *client, 1)
	go func() { opened <- r.open("bob", "d", "") }()
	var c *client
	select {
	case c = <-opened:
	case <-time.After(3 * time.Second):
		close(r.log.pendingGate.hold) // let the stream go, so the rig can stop
		t.Fatal("no response headers while the pending invitations are read")
	}
	<-r.log.pendingGate.entered
	if b := c.raw(); b.id != "" || b.event != "" { // the opening block, read is still held
		t.Fatalf("first block %+v, want the opening block", b)
	}
	close(r.log.pendingGate.hold)
	if b := c.next(); b.id != "1" {
		t.Fatalf("after the read %+v, want invitation 1", b)
	}
}

// Over HTTP/1.x the handler returns once the stream has taken the
// connection over, before the catch-up reads the log: net/http's reader
// and writer for the connection (8 KiB, never reused after a takeover) and
// the handler's deep stack are not held while the catch-up waits. In a
// burst of opens the catch-ups queue for their turn to read, and holding
// them there doubled the memory a burst of 15,000 streams left behind.
func TestHandlerReturnsBeforeTheCatchUp(t *testing.T) {
	r := newRig(t, Options{})
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	r.log.pending["bob"] = []int64{1}
	r.log.pendingGate = newGate(1)
	release := sync.OnceFunc(func() { close(r.log.pendingGate.hold) })
	defer release() // on a failure too: let the stream go, so the rig can stop
	c := r.open("bob", "d", "")
	<-r.log.pendingGate.entered
	wait.For(t, 3*time.Second, "the handler to return while the catch-up waits", func() bool { return r.served.Load() == 1 })
	release()
	if b := c.next(); b.id != "1" {
		t.Fatalf("after the read %+v, want invitation 1", b)
	}
}

// A client that leaves while its stream waits on a log read cancels the
// read: the stream ends at once, its read-pool turn is free again.
func TestClientLeavingCancelsTheCatchUp(t *testing.T) {
	r := newRig(t, Options{})
	r.log.pendingGate = newGate(1)
	defer close(r.log.pendingGate.hold)
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET /?user=bob&device=d HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	<-r.log.pendingGate.entered
	conn.Close()
	wait.For(t, 3*time.Second, "the stream to end", func() bool { return r.hub.Streams() == 0 && len(r.hub.readers) == 0 })
}

// A new stream replays at most PendingReplay invitations (the log returns
// the newest); the last is the head here, so no id block follows. Only
// those it sent are reported delivered (c1, still inviting, was not).
func TestPendingReplayIsCapped(t *testing.T) {
	r := newRig(t, Options{PendingReplay: 2})
	evs := r.log.add(inv("bob", "c1"), inv("bob", "c2"), inv("bob", "c3"))
	r.hub.Committed(evs, 0)
	r.log.pending["bob"] = []int64{1, 2, 3}
	r.log.unreceived["bob"] = []int64{1, 2, 3}
	c := r.open("bob", "d", "")
	c.raw() // opening
	for _, want := range []string{"2", "3"} {
		if b := c.raw(); b.id != want || b.event == "" {
			t.Fatalf("%+v, want invitation %s", b, want)
		}
	}
	r.svc.waitReportSet(t, "online bob", "delivered c2 bob", "delivered c3 bob")
}

// A late notification (an id never reported) makes only the streams of
// the users that id went to catch up from the log; another user's stream
// keeps getting live events without reading the log.
func TestGapCatchesUpOnlyItsUsers(t *testing.T) {
	r := newRig(t, Options{GapWait: 20 * time.Millisecond})
	bob, carol := r.open("bob", "d", ""), r.open("carol", "d", "")
	evs := r.log.add(changedEv("bob", "c1", ""), changedEv("carol", "c2", ""), changedEv("bob", "c3", ""))
	r.hub.Committed(evs[1:], 0) // 1 is never reported
	for _, want := range []string{"1", "3"} {
		if b := bob.next(); b.id != want {
			t.Fatalf("bob got %+v, want %s", b, want)
		}
	}
	if b := carol.next(); b.id != "2" {
		t.Fatalf("carol got %+v, want 2", b)
	}
	if n := r.log.readsOf("bob"); n == 0 {
		t.Fatal("bob's stream did not read the log")
	}
	if n := r.log.readsOf("carol"); n != 0 {
		t.Fatalf("carol's stream read the log %d times for a gap that was not hers", n)
	}
	if n := counter(r.hub.m.gaps); n != 1 {
		t.Fatalf("gaps %v, want 1", n)
	}
}

// A failed delivery report is retried.
func TestFailedDeliveryReportIsRetried(t *testing.T) {
	r := newRig(t, Options{})
	r.svc.failDeliveries = 2
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	c.next()
	r.svc.waitReports(t, "online bob", "failed c1 bob", "failed c1 bob", "delivered c1 bob")
}

// A failed presence report is retried like a delivery report: a caller
// whose "online" never reached the store would have its calls end as
// caller_offline while it is connected (issue 9 review).
func TestFailedPresenceReportIsRetried(t *testing.T) {
	r := newRig(t, Options{})
	r.svc.failPresence = 2
	r.open("bob", "d", "")
	r.svc.waitReports(t, "failed online bob", "failed online bob", "online bob")
}

// A report whose every quick retry failed because the store was out of
// reach (a failover, a cut path) is parked and made once the store
// answers: the invitation is on the invitee's screen, and a report given
// up left the invitee "inviting" while its stream stayed open. The same
// for a presence report.
func TestReportsWaitForTheStore(t *testing.T) {
	r := newRig(t, Options{})
	r.svc.failPresence = deliveryAttempts + 1
	r.svc.failDeliveries = deliveryAttempts + 1
	c := r.open("bob", "d", "")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	c.next()
	wait.For(t, 10*time.Second, "both reports made", func() bool {
		got := r.svc.list()
		return slices.Contains(got, "online bob") && slices.Contains(got, "delivered c1 bob")
	})
	failed := 0
	for _, rep := range r.svc.list() {
		if strings.HasPrefix(rep, "failed") {
			failed++
		}
	}
	if want := 2 * (deliveryAttempts + 1); failed != want {
		t.Errorf("%d failed reports before both were made, want %d: %v", failed, want, r.svc.list())
	}
}

// A delivery report lost for good (every retry failed, or the server died
// before it) is made again when the client resumes past the invitation:
// it had the event, its Last-Event-ID says so.
func TestResumeReportsALostDelivery(t *testing.T) {
	r := newRig(t, Options{})
	r.svc.failDeliveries = deliveryAttempts
	r.svc.failHard = true // not the store out of reach: given up, not parked
	// The stream resumes while the last failure is still on its way back
	// (on a loaded box, by chance): the resumed stream's report of c1 must
	// not be taken for one still under way.
	r.svc.lastFailReturns = 500 * time.Millisecond
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	last := c.next()
	wait.For(t, 3*time.Second, "the report to be given up", func() bool {
		n := 0
		for _, rep := range r.svc.list() {
			if strings.HasPrefix(rep, "failed") {
				n++
			}
		}
		return n == deliveryAttempts
	})
	c.close()
	// c2 comes while bob is away: above the resume point, it is not
	// reported from the log but written, and reported once flushed.
	r.hub.Committed(r.log.add(inv("bob", "c2")), 0)
	r.log.mu.Lock()
	r.log.unreceived["bob"] = []int64{1, 2}
	r.log.mu.Unlock()
	c = r.open("bob", "d", last.id)
	if b := c.next(); b.id != "2" {
		t.Fatalf("resumed with %+v, want 2", b)
	}
	wait.For(t, 3*time.Second, "the deliveries", func() bool {
		list := r.svc.list()
		return slices.Contains(list, "delivered c1 bob") && slices.Contains(list, "delivered c2 bob")
	})
}

// Streams of one user beyond MaxStreamsPerUser end even while they are
// still opening (waiting for a log read, here held shut): eviction cancels
// the stream's reads, so a user opening streams in a loop holds at most
// the cap's worth of connections and goroutines.
func TestEvictedStreamEndsWhileOpening(t *testing.T) {
	r := newRig(t, Options{MaxStreamsPerUser: 2, LogReaders: 1})
	r.log.pendingGate = newGate(100)
	defer close(r.log.pendingGate.hold)
	closed := make(chan int, 8)
	for i := range 8 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /?user=bob&device=d%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		br := bufio.NewReader(conn)
		if _, err := http.ReadResponse(br, nil); err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = io.Copy(io.Discard, br) // until the server closes it
			closed <- i
		}()
	}
	var ended []int
	for range 6 {
		select {
		case i := <-closed:
			ended = append(ended, i)
		case <-time.After(3 * time.Second):
			t.Fatalf("only streams %v of 8 ended; the cap is 2", ended)
		}
	}
	wait.For(t, 3*time.Second, "the hub to count the cap's 2 streams", func() bool { return r.hub.Streams() == 2 })
	slices.Sort(ended)
	if !slices.Equal(ended, []int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("streams %v ended, want the six oldest", ended)
	}
}

// Log reads take turns per user first: a user whose streams keep reading
// holds at most one shared read token, so another user's read is not
// queued behind all of them.
func TestLogReadsTakeTurnsPerUser(t *testing.T) {
	r := newRig(t, Options{MaxStreamsPerUser: 10, LogReaders: 2})
	r.log.pendingGate = newGate(100)
	for i := range 5 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /?user=bob&device=d%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
			t.Fatal(err)
		}
	}
	<-r.log.pendingGate.entered // one of bob's reads holds a shared token; his others wait for his turn
	if n := len(r.hub.readers); n != 1 {
		t.Fatalf("bob holds %d shared read tokens, want 1", n)
	}
	carol := r.open("carol", "d", "")
	<-r.log.pendingGate.entered // carol's read got the other shared token at once
	close(r.log.pendingGate.hold)
	carol.raw() // opening
}

// A burst of opens past Options.MaxOpeners waits in a queue, not in
// goroutines: each stream sends its head at once, no more than MaxOpeners
// catch up at a time, and every one opens once the log can be read, then
// holds only its own goroutine.
func TestOpenersAreCapped(t *testing.T) {
	const streams, openers = 10, 3
	r := newRig(t, Options{MaxOpeners: openers})
	r.log.pendingGate = newGate(streams)
	release := sync.OnceFunc(func() { close(r.log.pendingGate.hold) })
	defer release()
	clients := make([]*client, streams)
	for i := range clients {
		clients[i] = r.open(fmt.Sprint("u", i), "d", "")
		if b := clients[i].raw(); b != (block{}) { // "retry: …" alone
			t.Fatalf("stream %d began with %+v, want the opening block", i, b)
		}
	}
	wait.For(t, 3*time.Second, "the queue to hold the streams past the cap", func() bool {
		r.hub.omu.Lock()
		defer r.hub.omu.Unlock()
		return r.hub.catchUps.n == openers && len(r.hub.catchUps.queue) == streams-openers
	})
	if n := goroutinesIn("callsig/sse.(*stream).runOpening"); n != openers {
		t.Fatalf("%d openers running, want %d", n, openers)
	}
	release()
	for i, c := range clients {
		if b := c.raw(); b.id != "0" {
			t.Fatalf("stream %d: %+v, want its id block", i, b)
		}
	}
	wait.For(t, 3*time.Second, "the openers to end", func() bool {
		return goroutinesIn("callsig/sse.(*stream).runOpening") == 0 && streamGoroutines() == streams
	})
}

// A client that reads nothing holds no one else's turn to open: its
// catch-up blocks on a full socket, the stream gives its opener slot up
// (after writeProbe, not after the write timeout) and the next stream
// opens while it waits.
func TestSlowClientGivesItsOpenerSlotUp(t *testing.T) {
	r := newRig(t, Options{MaxOpeners: 1}, func(s *http.Server) {
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			_ = c.(*net.TCPConn).SetWriteBuffer(4096) // a catch-up fills it
			return ctx
		}
	})
	pad := strings.Repeat("x", 1000)
	for i := range 300 {
		r.hub.Committed(r.log.add(calls.Event{UserID: "slow", CallID: fmt.Sprint("c", i), Type: calls.EventUserStateChanged,
			Data: []byte(`{"callID":"c` + fmt.Sprint(i) + `","pad":"` + pad + `"}`)}), 0)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprint(conn, "GET /?user=slow&device=d HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 0\r\n\r\n")
	// Read nothing: its catch-up, 300 KB, stays stuck in the socket. Its
	// first log read shows it holds the slot, which it then gives up.
	wait.For(t, 3*time.Second, "the slow stream's catch-up to start", func() bool { return r.log.readsOf("slow") >= 1 })
	wait.For(t, 3*time.Second, "the slow stream to give its slot up", func() bool {
		r.hub.omu.Lock()
		defer r.hub.omu.Unlock()
		return r.hub.catchUps.n == 0
	})
	c := r.open("bob", "d", "")
	c.raw() // opening
	if b := c.raw(); b.id == "" {
		t.Fatalf("bob's stream: %+v, want its id block", b)
	}
}

// downStoreRig opens bob's stream on a rig whose two-frame buffer a burst
// overflows, and makes every log read fail as with the store down.
func downStoreRig(t *testing.T) (*rig, *client) {
	r := newRig(t, Options{Buffer: 2})
	c := r.open("bob", "d", "")
	c.raw() // opening
	c.raw() // id block
	r.log.mu.Lock()
	r.log.afterErr = fmt.Errorf("store down: %w", calls.ErrUnavailable)
	r.log.mu.Unlock()
	return r, c
}

// lagUntilRetries commits bob's events in bursts past the buffer until
// want log reads have found the store down (a stream quick enough keeps
// up with one burst), and returns how many it committed: ids 1 to n.
func lagUntilRetries(t *testing.T, r *rig, want float64) (n int) {
	t.Helper()
	for counter(r.hub.m.storeRetries) < want {
		if n >= 10000 {
			t.Fatalf("%v log reads found the store down after %d commits, want %v", counter(r.hub.m.storeRetries), n, want)
		}
		for range 10 {
			n++
			r.hub.Committed(r.log.add(changedEv("bob", fmt.Sprint("c", n), "")), 0)
		}
		time.Sleep(time.Millisecond)
	}
	return n
}

// While the store is down, a lagging stream with frames buffered reads the
// log once per retry, not in a loop, and keeps its connection; once the
// store is back it writes every event, in order.
func TestLaggingStreamWaitsForTheStore(t *testing.T) {
	r, c := downStoreRig(t)
	n := lagUntilRetries(t, r, 1)
	// Every commit above may have cost a read (each refilled the buffer);
	// from here, the last of them and the retry, a second away, at most.
	before := r.log.readsOf("bob")
	time.Sleep(300 * time.Millisecond) // a loop would read thousands of times meanwhile
	if reads := r.log.readsOf("bob") - before; reads > 2 {
		t.Fatalf("%d log reads in 300 ms while the store was down, want one per retry", reads)
	}
	r.log.mu.Lock()
	r.log.afterErr = nil
	r.log.mu.Unlock()
	for i := 1; i <= n; i++ {
		if b := c.next(); b.id != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v", i, b)
		}
	}
}

// A stream keeps one store retry pending, however many of its reads found
// the store down: a timer per failed read would pile up while the store is
// out, each one reading the log again every storeRetry.
func TestStoreRetriesDoNotPileUp(t *testing.T) {
	r, _ := downStoreRig(t)
	lagUntilRetries(t, r, 6)
	before := r.log.readsOf("bob")
	time.Sleep(storeRetry + 300*time.Millisecond) // every retry armed so far has fired
	// One retry, a second after the first failure; a second one only if
	// the bursts above took most of that second.
	if n := r.log.readsOf("bob") - before; n < 1 || n > 2 {
		t.Fatalf("%d log reads in %v after six reads found the store down, want the one retry", n, storeRetry+300*time.Millisecond)
	}
}

// A client that leaves while its stream waits for an opener is gone from
// the hub at once: the user goes offline without waiting for the queue.
func TestClientLeavingWhileQueuedGoesOffline(t *testing.T) {
	r := newRig(t, Options{MaxOpeners: 1})
	r.log.pendingGate = newGate(2)
	release := sync.OnceFunc(func() { close(r.log.pendingGate.hold) })
	defer release()
	r.open("alice", "d", "").raw() // holds the only opener, in its read
	<-r.log.pendingGate.entered
	bob := r.open("bob", "d", "")
	bob.raw() // opening: bob waits in the queue
	wait.For(t, 3*time.Second, "bob online", func() bool { return r.hub.Online("bob") })
	bob.close()
	wait.For(t, 3*time.Second, "bob offline while the queue waits", func() bool { return !r.hub.Online("bob") })
	release()
	wait.For(t, 3*time.Second, "alice's stream alone", func() bool { return r.hub.Streams() == 1 })
}

// A client that leaves while its stream's opener announces its presence
// is reported offline only after the announcement: a presence record
// written after the offline report would count the user online on other
// nodes until their next stream here closed.
func TestClientLeavingDuringAnnounceGoesOfflineAfterIt(t *testing.T) {
	svc := newRecorder()
	entered, hold := make(chan struct{}, 1), make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	defer release()
	left := make(chan struct{})
	r := newRig(t, Options{Service: svc, Announce: func(_ context.Context, user string) error {
		entered <- struct{}{}
		<-hold // a write in flight lands whatever the context says
		return svc.add("announce " + user)
	}, onDeserted: func() { close(left) }})
	// Raw: the head waits for the announcement, which the test holds.
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "GET /?user=bob&device=d HTTP/1.1\r\nHost: x\r\n\r\n")
	<-entered
	conn.Close()
	select {
	case <-left: // serve saw the client leave
	case <-time.After(3 * time.Second):
		t.Fatal("the server never saw the client leave")
	}
	release()
	svc.waitFor(t, []string{"online bob", "announce bob", "offline bob"}, func(got []string) bool { return slices.Contains(got, "offline bob") })
	got := svc.list()
	if a, o := slices.Index(got, "announce bob"), slices.Index(got, "offline bob"); a < 0 || a > o {
		t.Fatalf("reports %v: want the announcement before the offline report", got)
	}
}

// A new stream whose pending invitations cannot be read (the store
// unavailable, the read timed out) ends with a reset, as one evicted while
// opening does: it ended with nothing, and its client came back as a new
// stream that never got what was committed since the first subscribed
// (found by review).
func TestNewStreamWhoseOpeningFailsEndsWithReset(t *testing.T) {
	r := newRig(t, Options{})
	r.log.pendingGate = newGate(1)
	r.log.mu.Lock()
	r.log.pendingErr = calls.ErrUnavailable
	r.log.mu.Unlock()
	c := r.open("bob", "d", "")
	if b := c.raw(); b.event != "" || b.id != "" {
		t.Fatalf("opening %+v", b)
	}
	<-r.log.pendingGate.entered
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0) // subscribed: in its buffer
	close(r.log.pendingGate.hold)
	if b := c.raw(); b.event != "reset" {
		t.Fatalf("after the failed read %+v, want reset", b)
	}
	c.ended()
}

// A resumed catch-up longer than a page, pruned between two pages, ends
// the stream rather than skip the events pruned: its client resumes from
// its last id and is told to reset. Only the first page was checked, and
// the rest went on from where it was, without a word (found by review).
func TestCatchUpPrunedBetweenPagesEndsTheStream(t *testing.T) {
	r := newRig(t, Options{})
	var evs []calls.Event
	for i := range pageSize + 44 {
		evs = append(evs, inv("bob", fmt.Sprint("c", i)))
	}
	r.hub.Committed(r.log.add(evs...), 0)
	r.log.mu.Lock()
	r.log.onAfter = func(n int) {
		if n == 2 { // between the first page and the second
			r.log.mu.Lock()
			r.log.events = r.log.events[pageSize+24:] // ids up to 280 pruned
			r.log.mu.Unlock()
		}
	}
	r.log.mu.Unlock()
	c := r.open("bob", "d", "0")
	if b := c.raw(); b.id != "0" {
		t.Fatalf("opening %+v, want the id repeated", b)
	}
	var last string
	for i := range pageSize {
		b, ok := <-c.blocks
		if !ok {
			t.Fatalf("ended after %d blocks, last %s", i, last)
		}
		last = b.id
	}
	if last != fmt.Sprint(pageSize) {
		t.Fatalf("first page ended at %s, want %d", last, pageSize)
	}
	c.ended()
	for {
		select {
		case b, ok := <-c.blocks:
			if !ok {
				goto resumed
			}
			if b.event != "" {
				t.Fatalf("after the first page %+v: events %d..%d were pruned meanwhile and skipped", b, pageSize+1, pageSize+24)
			}
		default:
			goto resumed
		}
	}
resumed:
	c = r.open("bob", "d", last)
	if b := c.next(); b.event != "reset" {
		t.Fatalf("resuming from %s: %+v, want reset", last, b)
	}
}

// A stream whose opening waits for a turn to read the log (the one reader
// held by another stream's read, as in a burst of openings) still gets a
// comment line every heartbeat: nothing else is written meanwhile, and a
// proxy may take a quiet stream for dead (a review: none in 1.5 s with a
// 100-ms heartbeat).
func TestHeartbeatsWhileWaitingForATurn(t *testing.T) {
	heartbeatsWhileHeld(t, Options{LogReaders: 1}, "waiting for a turn")
}

// A stream whose headers are out and which waits in the queue for a
// catch-up slot (every one busy: a burst of openings, a slow store) gets
// a comment line every heartbeat too, from serve, and is opened as usual
// once a slot frees (a review: none in 550 ms with a 100-ms heartbeat).
func TestHeartbeatsWhileQueuedForACatchUpSlot(t *testing.T) {
	heartbeatsWhileHeld(t, Options{MaxOpeners: 1}, "queued for a catch-up slot")
}

// heartbeatsWhileHeld opens alice's stream, whose read of her pending
// invitations holds (with o's one reader, or one opener), then bob's,
// which waits behind it: bob gets comments only, about one every 100 ms,
// and once alice's read goes on his head and then live events.
func heartbeatsWhileHeld(t *testing.T, o Options, waiting string) {
	o.Heartbeat = 100 * time.Millisecond
	r := newRig(t, o)
	r.log.pendingGate = newGate(2)
	release := sync.OnceFunc(func() { close(r.log.pendingGate.hold) })
	defer release() // on a failure too: let the streams go, so the rig can stop
	r.open("alice", "d", "")
	<-r.log.pendingGate.entered // alice's read holds the way
	c := r.open("bob", "d", "")
	if b := c.raw(); b.event != "" || b.comment {
		t.Fatalf("first block %+v, want the opening block", b)
	}
	comments := 0
	deadline := time.After(550 * time.Millisecond)
	for held := true; held; {
		select {
		case b := <-c.blocks:
			if !b.comment {
				t.Fatalf("%+v while %s, want only comments", b, waiting)
			}
			comments++
		case <-deadline:
			held = false
		}
	}
	if comments < 3 {
		t.Errorf("%d comments in 550 ms %s with a 100-ms heartbeat, want 5 or so", comments, waiting)
	}
	release()
	for b := c.raw(); b.event != "synced"; b = c.raw() {
		if !b.comment {
			t.Fatalf("%+v, want comments, then the head", b)
		}
	}
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	if b := c.next(); b.event != "callInvitationReceived" {
		t.Fatalf("after the opening %+v, want the live invitation", b)
	}
}
