package sse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"callsig/calls"
)

// memLog is an in-memory event log.
type memLog struct {
	mu      sync.Mutex
	events  []calls.Event
	last    int64
	pending map[string][]int64 // user → ids of its pending invitations
	pruned  []int64            // cutoffs PruneEvents was called with
	// unreceived holds, per user, the ids of its invitations still
	// inviting or notYetReceived (UnreceivedInvitations).
	unreceived map[string][]int64
	// reads counts EventsAfter calls per user.
	reads map[string]int
	// onAfter, when set, runs as an EventsAfter begins, with the number
	// of its call (from 1), before the read (a pruning between pages).
	onAfter func(n int)
	afters  int
	// onOldest, when set, runs as an OldestEventID begins, with the
	// number of its call (from 1): a pruning batch after a page's read.
	onOldest func(n int)
	oldests  int
	// afterErr, when set, is what EventsAfter returns (after counting);
	// pendingErr what the next PendingInvitations returns (once).
	afterErr, pendingErr error
	// unreceivedErr, when set, is what UnreceivedInvitations returns.
	unreceivedErr error
	// Gates, when set, hold a kind of read: PendingInvitations, EventsAfter
	// and OldestEventID.
	pendingGate, afterGate, oldestGate readGate
}

// readGate holds the reads it guards until hold is closed; entered is
// signalled when one starts waiting. The zero value lets reads through.
type readGate struct{ hold, entered chan struct{} }

// newGate returns a closed-off gate whose entered signal buffers n reads.
func newGate(n int) readGate {
	return readGate{hold: make(chan struct{}), entered: make(chan struct{}, n)}
}

// wait signals entered and waits for hold to close, or for ctx.
func (g readGate) wait(ctx context.Context) error {
	if g.hold == nil {
		return nil
	}
	g.entered <- struct{}{}
	select {
	case <-g.hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newMemLog() *memLog {
	return &memLog{pending: map[string][]int64{}, unreceived: map[string][]int64{}, reads: map[string]int{}}
}

// add appends events, assigning ids, and returns them as committed.
func (l *memLog) add(evs ...calls.Event) []calls.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range evs {
		l.last++
		evs[i].ID = l.last
		if evs[i].Time == 0 {
			evs[i].Time = time.Now().UnixMilli() // else the first pruning takes it
		}
		if evs[i].Data == nil {
			evs[i].Data = json.RawMessage(`{"callID":"` + evs[i].CallID + `"}`)
		}
		l.events = append(l.events, evs[i])
	}
	return evs
}

// runHook counts a read in *calls and runs *hook, if set, with its number,
// outside the lock (a hook may prune the log).
func (l *memLog) runHook(calls *int, hook *func(n int)) {
	l.mu.Lock()
	*calls++
	n, h := *calls, *hook
	l.mu.Unlock()
	if h != nil {
		h(n)
	}
}

func (l *memLog) EventsAfter(ctx context.Context, user string, after int64, limit int) ([]calls.Event, error) {
	if err := l.afterGate.wait(ctx); err != nil {
		return nil, err
	}
	l.runHook(&l.afters, &l.onAfter)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads[user]++
	if l.afterErr != nil {
		return nil, l.afterErr
	}
	var out []calls.Event
	for _, e := range l.events {
		if e.UserID == user && e.ID > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// PendingInvitations waits for its gate, if set, or for ctx: a read the stream
// gave up on.
func (l *memLog) PendingInvitations(ctx context.Context, user string, limit int) ([]calls.Event, error) {
	if err := l.pendingGate.wait(ctx); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.pendingErr; err != nil {
		l.pendingErr = nil
		return nil, err
	}
	ids := l.pending[user]
	if len(ids) > limit {
		ids = ids[len(ids)-limit:]
	}
	return l.byID(ids), nil
}

// byID returns the events with the given ids, in the order given. mu is held.
func (l *memLog) byID(ids []int64) []calls.Event {
	var out []calls.Event
	for _, id := range ids {
		for _, e := range l.events {
			if e.ID == id {
				out = append(out, e)
			}
		}
	}
	return out
}

func (l *memLog) UnreceivedInvitations(_ context.Context, user string, upTo int64, limit int) ([]calls.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unreceivedErr != nil {
		return nil, l.unreceivedErr
	}
	var ids []int64
	for _, id := range l.unreceived[user] {
		if id <= upTo {
			ids = append(ids, id)
		}
	}
	if len(ids) > limit {
		ids = ids[len(ids)-limit:]
	}
	return l.byID(ids), nil
}

func (l *memLog) EventRecipients(_ context.Context, from, to int64, limit int) ([]string, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range l.events {
		if e.ID >= from && e.ID <= to && !seen[e.UserID] {
			seen[e.UserID] = true
			out = append(out, e.UserID)
		}
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

func (l *memLog) readsOf(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads[user]
}

func (l *memLog) OldestEventID(ctx context.Context) (int64, error) {
	if err := l.oldestGate.wait(ctx); err != nil {
		return 0, err
	}
	l.runHook(&l.oldests, &l.onOldest)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) == 0 {
		return 0, nil
	}
	return l.events[0].ID, nil
}

func (l *memLog) LastEventID(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, nil
}

func (l *memLog) PruneEvents(_ context.Context, before int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruned = append(l.pruned, before)
	n := 0
	for n < len(l.events) && l.events[n].Time < before {
		n++
	}
	l.events = l.events[n:]
	return int64(n), nil
}

func (l *memLog) prunedCutoffs() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.pruned...)
}

// recorder is a Service that records the reports it gets.
type recorder struct {
	mu      sync.Mutex
	reports []string
	changed chan struct{}
	// failDeliveries makes that many MarkDelivered calls fail first (each
	// recorded as "failed …"); failPresence the same for UserOnline and
	// UserOffline.
	failDeliveries, failPresence int
	// failHard makes MarkDelivered's failures errors of no domain code
	// (not calls.ErrUnavailable): given up, not parked.
	failHard bool
	// lastFailReturns delays the return of the last failing MarkDelivered
	// past its record, as a store's error arrives after the fact.
	lastFailReturns time.Duration
	// invitedAt holds the invitation time of each delivery report made,
	// by "call user".
	invitedAt map[string]int64
	// offlineSince is the since of the last UserOffline call.
	offlineSince time.Time
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) add(s string) error {
	r.mu.Lock()
	r.reports = append(r.reports, s)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) MarkDelivered(_ context.Context, callID, user string, invitedAt int64) error {
	r.mu.Lock()
	if r.invitedAt == nil {
		r.invitedAt = map[string]int64{}
	}
	r.invitedAt[callID+" "+user] = invitedAt
	fail := r.failDeliveries > 0
	if fail {
		r.failDeliveries--
	}
	delay := time.Duration(0)
	if fail && r.failDeliveries == 0 {
		delay = r.lastFailReturns
	}
	hard := r.failHard
	r.mu.Unlock()
	if fail {
		_ = r.add("failed " + callID + " " + user)
		time.Sleep(delay)
		if hard {
			return errors.New("db: no such table: calls")
		}
		// As a store says it: a passing failure is calls.ErrUnavailable.
		return fmt.Errorf("db: store unreachable: %w", calls.ErrUnavailable)
	}
	return r.add("delivered " + callID + " " + user)
}
func (r *recorder) UserOnline(_ context.Context, user string) error {
	return r.presence("online " + user)
}
func (r *recorder) UserOffline(_ context.Context, user string, since time.Time) error {
	r.mu.Lock()
	r.offlineSince = since
	r.mu.Unlock()
	return r.presence("offline " + user)
}

func (r *recorder) presence(report string) error {
	r.mu.Lock()
	fail := r.failPresence > 0
	if fail {
		r.failPresence--
	}
	r.mu.Unlock()
	if fail {
		_ = r.add("failed " + report)
		return errors.New("store unreachable")
	}
	return r.add(report)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reports...)
}

// waitReports waits until the recorder holds exactly want.
func (r *recorder) waitReports(t *testing.T, want ...string) {
	t.Helper()
	r.waitFor(t, want, func(got []string) bool { return strings.Join(got, "|") == strings.Join(want, "|") })
}

// waitReportSet is waitReports for reports in any order: several workers
// report at once, so two deliveries may be recorded either way round.
func (r *recorder) waitReportSet(t *testing.T, want ...string) {
	t.Helper()
	sorted := slices.Sorted(slices.Values(want))
	r.waitFor(t, want, func(got []string) bool { return slices.Equal(slices.Sorted(slices.Values(got)), sorted) })
}

func (r *recorder) waitFor(t *testing.T, want []string, done func(got []string) bool) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		if got := r.list(); done(got) {
			return
		} else if len(got) > len(want) {
			t.Fatalf("reports %q, want %q", got, want)
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("reports %q, want %q", r.list(), want)
		}
	}
}

// rig is a hub serving GET /events?user=&device= on a test server.
type rig struct {
	t   testing.TB
	hub *Hub
	log *memLog
	svc *recorder
	srv *httptest.Server
	// served counts the handler calls that have returned.
	served atomic.Int64
	// charge, when set before streams open, is their Charge.
	charge Charge
}

func newRig(t testing.TB, o Options, configure ...func(*http.Server)) *rig {
	t.Helper()
	r := &rig{t: t, log: newMemLog(), svc: newRecorder()}
	if o.Log == nil {
		o.Log = r.log
	} else if ml, ok := o.Log.(*memLog); ok {
		r.log = ml
	} else {
		r.log = nil // a real store (see peruser_test.go)
	}
	if o.Service == nil {
		o.Service = r.svc
	} else {
		r.svc = o.Service.(*recorder)
	}
	hub, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	r.hub = hub
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- hub.Run(ctx) }()
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		left, _ := time.ParseDuration(q.Get("left")) // the token's time left (none: 0)
		if r.charge != nil {
			req = req.WithContext(WithCharge(req.Context(), r.charge))
		}
		hub.ServeEvents(w, req, q.Get("user"), q.Get("device"), left)
		r.served.Add(1)
	}))
	for _, f := range configure {
		f(r.srv.Config)
	}
	r.srv.Start()
	t.Cleanup(func() {
		hub.Shutdown()
		r.srv.Close()
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
	return r
}

// block is one parsed SSE block.
type block struct {
	id, event, data string
	comment         bool
}

// client is a minimal SSE reader for unit tests (the WHATWG-exact one is
// internal/testkit's).
type client struct {
	t      testing.TB
	res    *http.Response
	blocks chan block
	done   chan struct{}
}

func (r *rig) open(user, device, lastEventID string) *client {
	r.t.Helper()
	return r.openQuery("user="+user+"&device="+device, lastEventID)
}

// openQuery opens a stream with the query q (user=, device=, left=).
func (r *rig) openQuery(q, lastEventID string) *client {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+"/?"+q, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := r.srv.Client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	c := &client{t: r.t, res: res, blocks: make(chan block, 1000), done: make(chan struct{})}
	go c.read()
	r.t.Cleanup(c.close)
	return c
}

func (c *client) read() {
	defer close(c.done)
	defer close(c.blocks)
	sc := bufio.NewScanner(c.res.Body)
	var b block
	var any bool
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if any {
				c.blocks <- b
			}
			b, any = block{}, false
			continue
		case strings.HasPrefix(line, ":"):
			b.comment = true
		default:
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "id":
				b.id = v
			case "event":
				b.event = v
			case "data":
				b.data = v
			}
		}
		any = true
	}
}

func (c *client) close() {
	c.res.Body.Close()
	<-c.done
}

// next returns the next event of the user: not a comment, an opening
// block or the synced event that ends an opening (read those with raw).
func (c *client) next() block {
	c.t.Helper()
	for {
		select {
		case b, ok := <-c.blocks:
			if !ok {
				c.t.Fatal("stream ended")
			}
			if b.event != "" && b.event != "synced" {
				return b
			}
		case <-time.After(3 * time.Second):
			c.t.Fatal("no event")
		}
	}
}

// raw returns the next block of any kind.
func (c *client) raw() block {
	c.t.Helper()
	select {
	case b, ok := <-c.blocks:
		if !ok {
			c.t.Fatal("stream ended")
		}
		return b
	case <-time.After(3 * time.Second):
		c.t.Fatal("no block")
	}
	return block{}
}

// ended waits for the server to end the stream.
func (c *client) ended() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		c.t.Fatal("stream still open")
	}
}

func (l *memLog) NewestEventIDs(_ context.Context, users []string) (map[string]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int64{}
	for _, e := range l.events {
		if slices.Contains(users, e.UserID) {
			out[e.UserID] = max(out[e.UserID], e.ID)
		}
	}
	return out, nil
}
