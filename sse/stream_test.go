package sse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"callsig/internal/wait"
)

func TestEncodeEvent(t *testing.T) {
	got := string(encodeEvent(42, "callInvitationReceived", []byte("{\"a\":\n1}")))
	want := "id: 42\nevent: callInvitationReceived\ndata: {\"a\": 1}\n\n"
	if got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := string(openingBlock(3*time.Second, 7, true)); got != "retry: 3000\nid: 7\n\n" {
		t.Fatalf("opening %q", got)
	}
	if got := string(openingBlock(3*time.Second, 0, false)); got != "retry: 3000\n\n" {
		t.Fatalf("opening %q", got)
	}
}

// A new stream starts with the pending invitations, then the synced event
// at the head; a resumed one replays after its id; a pruned id gets reset.
func TestOpeningAStream(t *testing.T) {
	r := newRig(t, Options{})
	evs := r.log.add(inv("bob", "c1"), changedEv("bob", "c1", ""), inv("bob", "c2"), changedEv("carol", "c3", ""))
	r.hub.Committed(evs, 0)
	r.log.pending["bob"] = []int64{1, 3}

	c := r.open("bob", "default", "")
	if b := c.raw(); b.data != "" || b.id != "" {
		t.Fatalf("opening %+v", b)
	}
	for _, want := range []string{"1", "3"} {
		if b := c.raw(); b.id != want || b.event != "callInvitationReceived" {
			t.Fatalf("pending %+v, want id %s", b, want)
		}
	}
	if b := c.raw(); b.id != "4" || b.event != "synced" || b.data != "{}" {
		t.Fatalf("head block %+v, want synced with id 4", b)
	}

	c = r.open("bob", "default", "1")
	if b := c.raw(); b.id != "1" {
		t.Fatalf("opening %+v, want the id repeated", b)
	}
	for _, want := range []string{"2", "3"} {
		if b := c.next(); b.id != want {
			t.Fatalf("replay %+v, want %s", b, want)
		}
	}

	r.log.mu.Lock()
	r.log.events = r.log.events[2:] // ids 1 and 2 pruned
	r.log.mu.Unlock()
	c = r.open("bob", "default", "0")
	if b := c.next(); b.event != "reset" {
		t.Fatalf("first %+v, want reset", b)
	}
	if b := c.next(); b.id != "3" {
		t.Fatalf("after reset %+v, want the pending invitation 3", b)
	}
}

// Heartbeat comments come at the configured interval.
func TestHeartbeat(t *testing.T) {
	r := newRig(t, Options{Heartbeat: 20 * time.Millisecond})
	c := r.open("bob", "default", "")
	c.raw() // opening
	for b := c.raw(); b.event != "synced"; b = c.raw() {
		if !b.comment {
			t.Fatalf("%+v before the head, want only comments", b)
		}
	}
	for range 3 {
		if b := c.raw(); !b.comment {
			t.Fatalf("%+v, want a comment", b)
		}
	}
}

// A stream opened with ?heartbeat=event gets each heartbeat as an event
// too, without an id, and still as the comment the contract promises; the
// first right after the opening block.
func TestHeartbeatEvents(t *testing.T) {
	r := newRig(t, Options{Heartbeat: 20 * time.Millisecond})
	c := r.openQuery("user=bob&device=default&heartbeat=event", "")
	c.raw() // opening
	for b := c.raw(); b.event != "synced"; b = c.raw() {
		if b != (block{event: "heartbeat", data: "{}", comment: true}) {
			t.Fatalf("%+v before the head, want only heartbeats", b)
		}
	}
	for range 3 {
		if b := c.raw(); b != (block{event: "heartbeat", data: "{}", comment: true}) {
			t.Fatalf("%+v, want a heartbeat event with its comment and no id", b)
		}
	}
	r.hub.Committed(r.log.add(changedEv("bob", "c1", "")), 0)
	b := c.next()
	for b.event == "heartbeat" {
		b = c.next()
	}
	if b.id != "1" {
		t.Fatalf("got %+v, want event 1 among the heartbeats", b)
	}
}

// The first heartbeat event comes with the opening block, not an interval
// later: the client watches the stream from its start.
func TestHeartbeatEventAtOnce(t *testing.T) {
	r := newRig(t, Options{Heartbeat: time.Hour})
	for _, last := range []string{"", "0"} { // new, resuming
		c := r.openQuery("user=bob&device=default&heartbeat=event", last)
		if b := c.raw(); b.event != "" || b.comment {
			t.Fatalf("Last-Event-ID %q: first block %+v, want the opening", last, b)
		}
		if b := c.raw(); b != (block{event: "heartbeat", data: "{}", comment: true}) {
			t.Fatalf("Last-Event-ID %q: after the opening %+v, want a heartbeat event", last, b)
		}
	}
	c := r.open("bob", "default", "")
	c.raw() // opening
	if b := c.raw(); b.event != "synced" {
		t.Fatalf("without ?heartbeat=event: %+v after the opening, want synced", b)
	}
}

// The server's ReadTimeout would cancel a request mid-stream; the stream
// clears its read deadline.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	r := newRig(t, Options{}, func(s *http.Server) { s.ReadTimeout = 50 * time.Millisecond })
	c := r.open("bob", "default", "")
	time.Sleep(150 * time.Millisecond) // past the ReadTimeout, which is real time
	r.hub.Committed(r.log.add(changedEv("bob", "c1", "")), 0)
	if b := c.next(); b.id != "1" {
		t.Fatalf("got %+v", b)
	}
}

// Device-bound events go only to that device's streams.
func TestMainDeviceEventsGoToThatDeviceOnly(t *testing.T) {
	r := newRig(t, Options{})
	phone, laptop := r.open("bob", "phone", ""), r.open("bob", "laptop", "")
	r.hub.Committed(r.log.add(changedEv("bob", "c1", "phone"), changedEv("bob", "c2", "")), 0)
	if b := phone.next(); b.id != "1" {
		t.Fatalf("phone got %+v", b)
	}
	if b := laptop.next(); b.id != "2" {
		t.Fatalf("laptop got %+v, want only event 2", b)
	}
	// Replay filters by device as well.
	again := r.open("bob", "laptop", "0")
	if b := again.next(); b.id != "2" {
		t.Fatalf("laptop replay got %+v", b)
	}
}

// Shutdown while a new stream is still reading what to start with: the
// stream still sends its pending invitations and the id of the log head
// before it ends, so the client resumes from there and loses nothing
// committed after it subscribed.
func TestShutdownWhileANewStreamOpens(t *testing.T) {
	log := newMemLog()
	r := newRig(t, Options{Log: log})
	r.hub.Committed(log.add(inv("bob", "c1"), changedEv("carol", "c2", "")), 0)
	log.pending["bob"] = []int64{1}
	log.pendingGate = newGate(1)

	body := make(chan string, 1)
	go func() {
		res, err := http.Get(r.srv.URL + "/?user=bob&device=d")
		if err != nil {
			body <- err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		body <- string(b)
	}()
	<-log.pendingGate.entered
	r.hub.Shutdown()
	close(log.pendingGate.hold)
	got := <-body
	want := "retry: 3000\n\nid: 1\nevent: callInvitationReceived\ndata: {\"callID\":\"c1\"}\n\nid: 2\nevent: synced\ndata: {}\n\n"
	if got != want {
		t.Fatalf("stream %q, want %q", got, want)
	}
}

// Over HTTP/1.1 the stream takes its connection over: the handler returns
// while the stream lives on, the response keeps the headers set before
// ServeEvents (CORS), is not chunked and ends with the connection.
func TestHijackedStream(t *testing.T) {
	var returned atomic.Int32
	r := newRig(t, Options{}, func(s *http.Server) {
		inner := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Access-Control-Allow-Origin", "https://app.example")
			inner.ServeHTTP(w, req)
			returned.Add(1)
		})
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /?user=bob&device=d HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
		"Access-Control-Allow-Origin": "https://app.example",
	} {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if res.StatusCode != http.StatusOK || len(res.TransferEncoding) > 0 || res.ContentLength != -1 || !res.Close {
		t.Fatalf("status %d, transfer encoding %v, length %d, close %v", res.StatusCode, res.TransferEncoding, res.ContentLength, res.Close)
	}
	wait.For(t, 3*time.Second, "the handler to return", func() bool { return returned.Load() != 0 })
	r.hub.Committed(r.log.add(changedEv("bob", "c1", "")), 0)
	want := "retry: 3000\n\nid: 0\nevent: synced\ndata: {}\n\nid: 1\nevent: callUserStateChanged\ndata: {\"callID\":\"c1\"}\n\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(res.Body, got); err != nil || string(got) != want {
		t.Fatalf("body %q (%v), want %q", got, err, want)
	}
	r.hub.Shutdown()
	if rest, err := io.ReadAll(res.Body); err != nil || len(rest) > 0 { // to the end of the connection
		t.Fatalf("after shutdown %q, %v; want a clean end", rest, err)
	}
}

// A hijacked stream sees its client leave: the user goes offline.
func TestHijackedStreamClientLeaves(t *testing.T) {
	r := newRig(t, Options{})
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	c.close()
	r.svc.waitReports(t, "online bob", "offline bob")
	if r.hub.Streams() != 0 {
		t.Fatal("stream still registered")
	}
}

// An idle hijacked stream holds one goroutine, serve's, parked in a read of
// its connection: no second one watching the connection, no select loop,
// no opening one left behind.
func TestIdleStreamHoldsOneGoroutine(t *testing.T) {
	r := newRig(t, Options{})
	const n = 20
	clients := make([]*client, n)
	for i := range n {
		clients[i] = r.open(fmt.Sprint("u", i), "d", "")
		clients[i].raw() // opening
		clients[i].raw() // the id block: open
	}
	wait.For(t, 3*time.Second, fmt.Sprintf("%d goroutines for %d streams", n, n), func() bool {
		return streamGoroutines() == n
	})
	// Parked, not spinning: a goroutine woken over and over (a read
	// deadline left in the past, say) would burn a core meanwhile.
	before := cpuTime(t)
	time.Sleep(300 * time.Millisecond)
	if used := cpuTime(t) - before; used > 100*time.Millisecond {
		t.Fatalf("%v of CPU in 300 ms with %d idle streams", used, n)
	}
	// And that one is enough: it wakes for an event.
	r.hub.Committed(r.log.add(changedEv(fmt.Sprint("u", n-1), "c1", "")), 0)
	if b := clients[n-1].next(); b.data != `{"callID":"c1"}` {
		t.Fatalf("got %+v", b)
	}
}

// streamGoroutines counts the goroutines of this process that run a
// stream's code.
func streamGoroutines() int {
	return goroutinesIn("callsig/sse.(*stream)", "callsig/sse.(*Hub).ServeEvents")
}

// goroutinesIn counts the goroutines of this process with any of the
// functions in their stacks.
func goroutinesIn(funcs ...string) int {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		for _, f := range funcs {
			if strings.Contains(g, f) {
				n++
				break
			}
		}
	}
	return n
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
