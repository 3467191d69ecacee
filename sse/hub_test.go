package sse

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"callsig/calls"
	"callsig/internal/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func inv(user, call string) calls.Event {
	return calls.Event{UserID: user, CallID: call, Type: calls.EventReceived}
}

func changedEv(user, call, device string) calls.Event {
	return calls.Event{UserID: user, Device: device, CallID: call, Type: calls.EventUserStateChanged}
}

// Commits reported out of order reach streams in id order.
func TestCommitsReportedOutOfOrderAreWrittenInOrder(t *testing.T) {
	r := newRig(t, Options{})
	c := r.open("bob", "default", "")
	evs := r.log.add(changedEv("bob", "c1", ""), changedEv("bob", "c2", ""), changedEv("bob", "c3", ""))
	r.hub.Committed(evs[2:], 0)
	r.hub.Committed(evs[1:2], 0)
	r.hub.Committed(evs[:1], 0)
	for i := 1; i <= 3; i++ {
		if b := c.next(); b.id != fmt.Sprint(i) {
			t.Fatalf("event %d has id %s", i, b.id)
		}
	}
}

// An id that is never reported (a lost notification) holds the later ones
// back only for GapWait; then streams read what committed from the log.
func TestMissingIDIsCaughtUpFromTheLog(t *testing.T) {
	r := newRig(t, Options{GapWait: 20 * time.Millisecond})
	c := r.open("bob", "default", "")
	evs := r.log.add(changedEv("bob", "c1", ""), changedEv("bob", "c2", ""), changedEv("carol", "c3", ""))
	r.hub.Committed(evs[1:], 0) // 1 is never reported
	if b := c.next(); b.id != "1" {
		t.Fatalf("first %s, want 1 from the log", b.id)
	}
	if b := c.next(); b.id != "2" {
		t.Fatalf("second %s, want 2", b.id)
	}
	if n := counter(r.hub.m.late); n != 0 {
		t.Fatalf("late reports %v before any", n)
	}
	// A late report of the skipped id changes nothing, but is counted.
	r.hub.Committed(evs[:1], 0)
	more := r.log.add(changedEv("bob", "c4", ""))
	r.hub.Committed(more, 0)
	if b := c.next(); b.id != "4" {
		t.Fatalf("third %s, want 4", b.id)
	}
	if n := counter(r.hub.m.late); n != 1 {
		t.Fatalf("late reports %v, want 1", n)
	}
}

// A subscriber whose buffer is full is marked lagging and counted, never
// waited for; when it writes again it reads the log first.
func TestFullBufferCatchesUpFromTheLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	hub, err := New(context.Background(), Options{Log: newMemLog(), Service: newRecorder(), Buffer: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	log := hub.o.Log.(*memLog)
	w := httptest.NewRecorder()
	sub, head, _ := hub.subscribe("bob", "default", http.NewResponseController(w), nil, func() {})
	defer hub.unsubscribe(sub)
	for i := range 5 {
		hub.Committed(log.add(changedEv("bob", fmt.Sprint("c", i), "")), 0)
	}
	if !sub.lagging.Load() || counter(hub.m.dropped) != 1 {
		t.Fatalf("lagging %v, dropped %v", sub.lagging.Load(), counter(hub.m.dropped))
	}
	st := &stream{h: hub, w: w, rc: http.NewResponseController(w), sub: sub, user: "bob", device: "default", lastID: head, ctx: context.Background()}
	if err := st.batch(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(w.Body.String(), "\n") {
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, id)
		}
	}
	if strings.Join(ids, ",") != "1,2,3,4,5" {
		t.Fatalf("written %v", ids)
	}
}

// Shutdown ends streams and refuses new ones with an empty stream.
func TestShutdown(t *testing.T) {
	r := newRig(t, Options{})
	c := r.open("bob", "default", "")
	r.svc.waitReports(t, "online bob")
	r.hub.Shutdown()
	c.ended()
	late := r.open("bob", "default", "7")
	if b := late.raw(); b.id != "7" {
		t.Fatalf("refused stream sent %+v, want the opening block keeping id 7", b)
	}
	late.ended()
	if r.hub.Streams() != 0 {
		t.Fatal("streams left")
	}
	r.svc.waitReports(t, "online bob") // no offline report for a shutdown
}

// Shutdown ends a stream that is reading the log once its client could
// resume losslessly (a resuming one, here): the read is cancelled, so the
// stream ends at once rather than after Options.ReadTimeout, and its turn
// to read is free again.
func TestShutdownCancelsAResumingStreamsRead(t *testing.T) {
	r := newRig(t, Options{ReadTimeout: time.Minute})
	r.log.add(inv("bob", "c1"))
	r.log.afterGate = newGate(1)
	defer close(r.log.afterGate.hold)
	c := r.open("bob", "default", "1")
	<-r.log.afterGate.entered // its catch-up waits in EventsAfter
	r.hub.Shutdown()
	c.ended()
	wait.For(t, 3*time.Second, "the stream's read turn back", func() bool { return r.hub.Streams() == 0 && len(r.hub.readers) == 0 })
}

// A resuming stream still checking its Last-Event-ID when Shutdown runs is
// not interruptible yet, so Shutdown leaves its read alone; it turns
// interruptible once the check is done, sees the shutdown there, and its
// catch-up read ends at once rather than after Options.ReadTimeout.
func TestStreamInterruptibleAfterShutdownStopsReading(t *testing.T) {
	r := newRig(t, Options{ReadTimeout: time.Minute})
	r.log.add(inv("bob", "c1"), inv("bob", "c2"))
	r.log.oldestGate, r.log.afterGate = newGate(1), newGate(1)
	defer close(r.log.afterGate.hold)
	c := r.open("bob", "default", "1")
	<-r.log.oldestGate.entered // is 1 still in the log? (see stream.expired)
	r.hub.Shutdown()
	close(r.log.oldestGate.hold)
	c.ended()
	wait.For(t, 3*time.Second, "the stream's read turn back", func() bool { return r.hub.Streams() == 0 && len(r.hub.readers) == 0 })
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// A write blocked on a client that reads nothing is cut short by Shutdown
// (not left to the write deadline), and the dropped counter shows the
// stream fell behind; nothing waited on it meanwhile.
func TestShutdownUnblocksAStuckWrite(t *testing.T) {
	r := newRig(t, Options{WriteTimeout: time.Minute})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /?user=stuck&device=d HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	wait.For(t, 3*time.Second, "the stream to open", func() bool { return r.hub.Online("stuck") })
	big := json.RawMessage(`{"x":"` + strings.Repeat("x", 64<<10) + `"}`)
	for i := 0; counter(r.hub.m.dropped) == 0; i++ {
		if i == 5000 {
			t.Fatal("the stream never fell behind")
		}
		start := time.Now()
		r.hub.Committed(r.log.add(calls.Event{UserID: "stuck", CallID: "c", Type: calls.EventUserStateChanged, Data: big}), 0)
		if d := time.Since(start); d > time.Second { // blocked: a minute (WriteTimeout)
			t.Fatalf("Committed took %v", d)
		}
	}
	r.hub.Shutdown()
	wait.For(t, 2*time.Second, "the stuck stream to end after Shutdown", func() bool { return r.hub.Streams() == 0 })
}
