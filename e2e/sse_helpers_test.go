package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/testkit"
)

// eventWait is how long a story waits for an event that must come: a
// deadline, never a sleep.
const eventWait = 5 * time.Second

// quietWindow is the window in which an event that must not come would show.
const quietWindow = 150 * time.Millisecond

// listener is one user's event stream in a story: it checks every event it
// takes against the contract (ids increasing, data fields as the event
// table lists them) and can reconnect with its Last-Event-ID.
type listener struct {
	t      *testing.T
	s      *testkit.Server
	user   string
	device string
	*testkit.Stream
	lastID int64
	seen   []testkit.Event // every event taken, over all connections
	// backlog holds what the previous connection had parsed but the story
	// had not taken yet when it reconnected.
	backlog []testkit.Event
}

// listen opens a new stream (no Last-Event-ID) for user on device.
func listen(t *testing.T, s *testkit.Server, user, device string) *listener {
	t.Helper()
	return &listener{t: t, s: s, user: user, device: device, Stream: s.Stream(user, device, "")}
}

// reconnect opens a new stream resuming from the last event ID the client
// holds, as EventSource does.
func (l *listener) reconnect() {
	l.t.Helper()
	l.drop()
	l.Stream = l.s.Stream(l.user, l.device, l.Stream.LastEventID())
}

// drop closes the connection (if the server has not), keeping what it had
// parsed for take.
func (l *listener) drop() {
	if !l.Stream.Ended() {
		l.Stream.Close()
	}
	l.backlog = append(l.backlog, l.Stream.Pending()...)
}

// contractFields are the data fields of each event (the contract's table).
var contractFields = map[string][]string{
	string(calls.EventCreated):          {"callID", "caller", "mode", "timeout", "createTime", "extendedData", "callUserList"},
	string(calls.EventReceived):         {"callID", "caller", "inviter", "mode", "timeout", "createTime", "extendedData", "callUserList"},
	string(calls.EventCancelled):        {"callID", "inviter", "mode", "extendedData"},
	string(calls.EventTimeout):          {"callID", "mode"},
	string(calls.EventEnded):            {"callID", "caller", "operatedUserID", "mode", "endTime", "extendedData"},
	string(calls.EventUserStateChanged): {"callID", "callUserList"},
}

// take reads the next event and checks it.
func (l *listener) take() testkit.Event {
	l.t.Helper()
	var e testkit.Event
	if len(l.backlog) > 0 {
		e, l.backlog = l.backlog[0], l.backlog[1:]
	} else {
		e = l.Next(eventWait)
	}
	l.check(e)
	return e
}

func (l *listener) check(e testkit.Event) {
	l.t.Helper()
	id := e.ID()
	if id <= l.lastID {
		l.t.Fatalf("%s: event id %s after %d: ids must increase (%v)", l.user, e.LastEventID, l.lastID, e)
	}
	l.lastID = id
	l.seen = append(l.seen, e)
	want, ok := contractFields[e.Type]
	if !ok {
		l.t.Fatalf("%s: unknown event type %v", l.user, e)
	}
	f := e.Fields()
	if got := slices.Sorted(maps.Keys(f)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		l.t.Fatalf("%s: %s data fields %v, want %v", l.user, e.Type, got, want)
	}
	if strings.ContainsAny(e.Data, "\r\n") {
		l.t.Fatalf("%s: data is not one line: %q", l.user, e.Data)
	}
}

// desc describes an expected event: its type, call and, for
// callUserStateChanged, the changed users as "user=state".
type desc struct {
	typ     calls.EventType
	call    string
	changes []string
}

func ev(typ calls.EventType, call string) desc { return desc{typ: typ, call: call} }

func changed(call string, changes ...string) desc {
	return desc{typ: calls.EventUserStateChanged, call: call, changes: changes}
}

func (d desc) String() string {
	return fmt.Sprintf("%s %s %v", d.typ, shortID(d.call), d.changes)
}

func (d desc) matches(e testkit.Event) bool {
	if e.Type != string(d.typ) || e.CallID() != d.call {
		return false
	}
	if d.typ != calls.EventUserStateChanged {
		return true
	}
	var got []string
	for u, s := range e.Users() {
		got = append(got, u+"="+s)
	}
	slices.Sort(got)
	return slices.Equal(got, slices.Sorted(slices.Values(d.changes)))
}

func shortID(id string) string { return id[:min(6, len(id))] }

func describe(e testkit.Event) string {
	s := e.LastEventID + " " + e.Type + " " + shortID(e.CallID())
	if e.Type == string(calls.EventUserStateChanged) {
		var ch []string
		for u, st := range e.Users() {
			ch = append(ch, u+"="+st)
		}
		slices.Sort(ch)
		s += fmt.Sprint(" ", ch)
	}
	return s
}

// expect takes exactly len(want) events, in that order.
func (l *listener) expect(want ...desc) []testkit.Event {
	l.t.Helper()
	got := make([]testkit.Event, 0, len(want))
	for i, d := range want {
		e := l.take()
		got = append(got, e)
		if !d.matches(e) {
			l.t.Fatalf("%s/%s event %d: got %s, want %s", l.user, l.device, i, describe(e), d)
		}
	}
	return got
}

// expectAnyOrder takes exactly len(want) events, matching them in any
// order (for events whose relative order is not defined, like the
// deliveries of several invitees).
func (l *listener) expectAnyOrder(want ...desc) {
	l.t.Helper()
	rest := slices.Clone(want)
	var got []string
	for range want {
		e := l.take()
		got = append(got, describe(e))
		i := slices.IndexFunc(rest, func(d desc) bool { return d.matches(e) })
		if i < 0 {
			l.t.Fatalf("%s/%s: got %v, want (any order) %v", l.user, l.device, got, want)
		}
		rest = slices.Delete(rest, i, i+1)
	}
}

// nothing fails if an event arrives within the quietWindow window.
func (l *listener) nothing() {
	l.t.Helper()
	l.NoEvent(quietWindow)
}

// loadCall reads a call straight from the store, for the state the API
// does not show (the caller-offline deadline).
func loadCall(t *testing.T, s *testkit.Server, id string) *calls.Call {
	t.Helper()
	c, err := s.App.Store.Call(context.Background(), id)
	if err != nil {
		t.Fatalf("load call %s: %v", id, err)
	}
	return c
}

// scrapeMetric reads one unlabelled series from GET /metrics.
func scrapeMetric(t testing.TB, s *testkit.Server, name string) float64 {
	t.Helper()
	res, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s = %q", name, v)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

// seenExactlyTheLog fails unless the events taken so far are exactly the
// user's events in the log (up to the last one taken), each once, in order.
func (l *listener) seenExactlyTheLog() {
	l.t.Helper()
	var want, got []string
	for _, e := range l.s.Log(l.user) {
		if e.ID <= l.lastID && (e.Device == "" || e.Device == l.device || (l.device == "" && e.Device == "default")) {
			want = append(want, fmt.Sprint(e.ID, " ", e.Type))
		}
	}
	for _, e := range l.seen {
		got = append(got, e.LastEventID+" "+e.Type)
	}
	if !slices.Equal(got, want) {
		l.t.Fatalf("%s received\n%v\nthe log holds\n%v", l.user, got, want)
	}
}
