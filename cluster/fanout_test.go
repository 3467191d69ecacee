package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/internal/wait"
)

// natsURL is the development NATS server (see the README's test script).
const natsURL = "nats://127.0.0.1:4222"

// wakes records the users it is woken for and the events handed to it.
type wakes struct {
	mu     sync.Mutex
	users  []string
	events []calls.Event
}

func (w *wakes) Committed(events []calls.Event, _ int) {
	w.mu.Lock()
	w.events = append(w.events, events...)
	w.mu.Unlock()
}

func (w *wakes) handed() []calls.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

func (w *wakes) Wake(users []string) {
	w.mu.Lock()
	w.users = append(w.users, users...)
	w.mu.Unlock()
}

func (w *wakes) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.users)
}

// node starts a fan-out on subject as node id until the test ends.
func node(t *testing.T, id, subject string, w Waker, reg prometheus.Registerer) *Fanout {
	t.Helper()
	f, err := New(Options{URL: natsURL, NodeID: id, Waker: w, Subject: subject, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Connect(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	wait.For(t, 5*time.Second, "node "+id+" connected to NATS at "+natsURL, func() bool { return f.conn().IsConnected() })
	if err := f.conn().Flush(); err != nil { // the server has our subscription
		t.Fatal(err)
	}
	return f
}

func subject(t *testing.T) string {
	var b [6]byte
	rand.Read(b[:])
	return "callsig.test." + hex.EncodeToString(b[:])
}

func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// A commit's users reach the other nodes' wakers, not the publisher's own,
// and the metrics count both sides.
func TestWakeUpsReachTheOtherNodes(t *testing.T) {
	subj := subject(t)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	var wa, wb, wc wakes
	a := node(t, "a", subj, &wa, regA)
	node(t, "b", subj, &wb, regB)
	node(t, "c", subj, &wc, nil)
	if got := value(t, regA, "callsig_nats_connected"); got != 1 {
		t.Errorf("callsig_nats_connected = %v, want 1", got)
	}
	a.Committed([]calls.Event{{ID: 7, UserID: "bob"}, {ID: 8, UserID: "carol"}, {ID: 9, UserID: "bob"}}, 0)
	for _, w := range []*wakes{&wb, &wc} {
		wait.For(t, 5*time.Second, "wake-ups on the other nodes", func() bool { return len(w.list()) >= 2 })
		if got := w.list(); !slices.Equal(got, []string{"bob", "carol"}) {
			t.Errorf("woken for %v, want bob, carol once each", got)
		}
	}
	// A positive marker from b: once a has it, a would have had its own.
	b2 := node(t, "b2", subj, &wakes{}, nil)
	b2.Committed([]calls.Event{{ID: 10, UserID: "marker"}}, 0)
	wait.For(t, 5*time.Second, "the marker on a", func() bool { return slices.Contains(wa.list(), "marker") })
	if got := wa.list(); !slices.Equal(got, []string{"marker"}) {
		t.Errorf("the publisher was woken for %v, want only the other node's marker", got)
	}
	if got := value(t, regA, "callsig_cluster_wakeups_published_total"); got != 1 {
		t.Errorf("published = %v, want 1", got)
	}
	if got := value(t, regB, "callsig_cluster_wakeups_received_total"); got < 1 {
		t.Errorf("received on b = %v, want at least 1", got)
	}
}

// An event that names its predecessor reaches the other nodes whole, to be
// handed over there; one that does not (a user's first), and a garbled
// line, only wake their users.
func TestEventsThatFollowOnTravelWhole(t *testing.T) {
	subj := subject(t)
	var wa, wb wakes
	a := node(t, "a", subj, &wa, nil)
	node(t, "b", subj, &wb, nil)
	ev := calls.Event{ID: 12, After: 9, UserID: "bob", Device: "phone", CallID: "c1",
		Type: calls.EventUserStateChanged, Data: json.RawMessage(`{"text":"two\nlines\ttab"}`), Time: 1700}
	a.Committed([]calls.Event{ev, {ID: 13, UserID: "carol"}}, 0)
	wait.For(t, 5*time.Second, "b handed the event and woken for carol", func() bool {
		return len(wb.handed()) == 1 && len(wb.list()) == 1
	})
	if got := wb.handed()[0]; !reflect.DeepEqual(got, ev) {
		t.Errorf("handed %+v, want %+v", got, ev)
	}
	if got := wb.list(); !slices.Equal(got, []string{"carol"}) {
		t.Errorf("woken for %v, want carol", got)
	}
	if _, ok := parseEventLine("bob\t{not json"); ok {
		t.Error("a garbled event line parsed")
	}
	if _, ok := parseEventLine("bob"); ok {
		t.Error("a wake-up line parsed as an event")
	}
}

// Messages round-trip, and a long list is split.
func TestEncodeDecode(t *testing.T) {
	users := []string{"bob", "carol"}
	msgs := encode("n1", users, nil)
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	if node, got := decode(msgs[0]); node != "n1" || !slices.Equal(got, users) {
		t.Errorf("decode = %s %v", node, got)
	}
	var many []string
	for range 5000 {
		many = append(many, "user-0123456789")
	}
	msgs = encode("n1", many, nil)
	n := 0
	for _, m := range msgs {
		if len(m) > maxBatchBytes {
			t.Errorf("message of %d bytes", len(m))
		}
		_, got := decode(m)
		n += len(got)
	}
	if len(msgs) < 2 || n != 5000 {
		t.Errorf("%d messages, %d users, want several and 5000", len(msgs), n)
	}
}
