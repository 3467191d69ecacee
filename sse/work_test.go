package sse

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// A user is online while it has a stream; the first open and last close
// are reported, and a flushed invitation is reported delivered once even
// when two streams got it.
func TestPresenceAndDeliveryReports(t *testing.T) {
	r := newRig(t, Options{})
	a := r.open("bob", "phone", "")
	r.svc.waitReports(t, "online bob")
	b := r.open("bob", "laptop", "")
	if !r.hub.Online("bob") || r.hub.Online("carol") {
		t.Fatal("presence wrong")
	}
	r.hub.Committed(r.log.add(inv("bob", "c1")), 0)
	a.next()
	b.next()
	r.svc.waitReports(t, "online bob", "delivered c1 bob")
	a.close()
	b.close()
	r.svc.waitReports(t, "online bob", "delivered c1 bob", "offline bob")
	if r.hub.Online("bob") || r.hub.Streams() != 0 {
		t.Fatal("still online")
	}
}

// The hub dates an offline report with its clock's time when the user's
// last stream closed, and keeps that date when the report fails and is
// made later: the caller-offline grace runs from the close.
func TestOfflineReportDatedAtTheClose(t *testing.T) {
	clk := fakeclock.New(time.UnixMilli(1_000_000_000))
	r := newRig(t, Options{Clock: clk})
	c := r.open("bob", "phone", "")
	r.svc.waitReports(t, "online bob")
	closed := clk.Now()
	r.svc.mu.Lock()
	r.svc.failPresence = deliveryAttempts // every quick retry: parked
	r.svc.mu.Unlock()
	c.close()
	want := make([]string, 0, deliveryAttempts+2)
	want = append(want, "online bob")
	for range deliveryAttempts {
		want = append(want, "failed offline bob")
	}
	r.svc.waitReports(t, want...)
	clk.Advance(time.Minute) // the store is out of reach for a minute
	r.svc.waitReports(t, append(want, "offline bob")...)
	r.svc.mu.Lock()
	since := r.svc.offlineSince
	r.svc.mu.Unlock()
	if !since.Equal(closed) {
		t.Fatalf("offline reported since %v, want the close %v (the clock is at %v)", since, closed, clk.Now())
	}
}

// Presence reports follow the transitions: an offline overtaken by a
// reconnection is not reported, and every transition to online is (the
// caller may have created calls while it looked offline). A blip whose
// online was never reported still reports the offline: calls the caller
// made while connected are tracked from the start, and their grace period
// is armed only by that report.
func TestPresenceReportsCoalesce(t *testing.T) {
	rec := newRecorder()
	w := newWork(slog.New(slog.DiscardHandler), rec, nil)
	ctx := context.Background()
	drain := func() {
		for w.step(ctx) {
		}
	}
	w.presence("a", true, time.Time{})
	w.presence("a", false, time.Time{})
	drain()
	if got, want := strings.Join(rec.list(), "|"), "offline a"; got != want {
		t.Fatalf("a blip before any report: %q, want %q", got, want)
	}
	if len(w.users) != 0 {
		t.Fatalf("state kept after the blip: %v", w.users)
	}
	rec = newRecorder()
	w = newWork(slog.New(slog.DiscardHandler), rec, nil)
	w.presence("a", true, time.Time{})
	drain()
	w.presence("a", false, time.Time{})
	w.presence("a", true, time.Time{})
	drain()
	w.presence("a", false, time.Time{})
	drain()
	if got, want := strings.Join(rec.list(), "|"), "online a|online a|offline a"; got != want {
		t.Fatalf("reports %q, want %q", got, want)
	}
	if len(w.users) != 0 {
		t.Fatalf("state kept for offline users: %v", w.users)
	}
}

// The offline that closes an unreported online episode is parked and made
// again when it fails, like any other presence report, not dropped as
// "offline and never reported online".
func TestUnreportedEpisodeOfflineRetried(t *testing.T) {
	rec := newRecorder()
	rec.failPresence = deliveryAttempts // every quick retry of the first report
	w := newWork(slog.New(slog.DiscardHandler), rec, nil)
	ctx := context.Background()
	w.presence("a", true, time.Time{})
	w.presence("a", false, time.Time{})
	for w.step(ctx) {
	}
	w.unpark()
	for w.step(ctx) {
	}
	got := rec.list()
	if len(got) == 0 || got[len(got)-1] != "offline a" {
		t.Fatalf("reports %q, want the offline made after the failures", got)
	}
	if len(w.users) != 0 {
		t.Fatalf("state kept after the offline was made: %v", w.users)
	}
}

// A delivery report names the invitation it is about by its event's time,
// whether the stream flushed it or re-derived it from the log on resuming:
// the service ignores a late report of an earlier invitation of the same
// user in the same call (see calls.Delivered).
func TestDeliveryReportsNameTheInvitation(t *testing.T) {
	r := newRig(t, Options{})
	c := r.open("bob", "d", "")
	r.svc.waitReports(t, "online bob")
	// Times of now, each its own: a time of 1970 is the retention's to
	// prune, and the pruner took the second invitation from the log
	// before the stream resuming from it read it back (once in a
	// thousand runs, on a loaded machine).
	at1 := time.Now().UnixMilli() - 10
	first := inv("bob", "c1")
	first.Time = at1
	r.hub.Committed(r.log.add(first), 0)
	c.next()
	r.svc.waitReports(t, "online bob", "delivered c1 bob")
	c.close()
	r.svc.waitReports(t, "online bob", "delivered c1 bob", "offline bob")
	second := inv("bob", "c2")
	second.Time = at1 + 5
	evs := r.log.add(second)
	r.log.mu.Lock()
	r.log.unreceived["bob"] = []int64{evs[0].ID}
	r.log.mu.Unlock()
	r.open("bob", "d", strconv.FormatInt(evs[0].ID, 10)) // had it, report lost
	r.svc.waitReportSet(t, "online bob", "delivered c1 bob", "offline bob", "online bob", "delivered c2 bob")
	r.svc.mu.Lock()
	defer r.svc.mu.Unlock()
	if got := r.svc.invitedAt; got["c1 bob"] != at1 || got["c2 bob"] != at1+5 {
		t.Fatalf("reports named invitations %v, want c1 at %d (flushed) and c2 at %d (re-derived)", got, at1, at1+5)
	}
}

// A stream's late announcement (its presence row written after the offline
// report deleted it) queues one more offline report; when that report
// fails, it is parked and made again like any other, not dropped as
// "offline and reported so": the row would keep the user online
// cluster-wide for as long as this node lived.
func TestAnnouncedReportRetriedAfterFailure(t *testing.T) {
	svc := &scriptedReports{}
	w := newWork(slog.New(slog.DiscardHandler), svc, nil)
	ctx := context.Background()
	w.presence("a", true, time.Time{})
	for w.step(ctx) {
	}
	w.presence("a", false, time.Time{})
	// A stream evicted meanwhile announces itself while the offline
	// report runs, its insert landing after that report's delete.
	svc.during = func() { w.announced("a") }
	if !w.step(ctx) {
		t.Fatal("no offline report")
	}
	svc.failing = true // the report for the row fails every quick retry
	for w.step(ctx) {
	}
	svc.failing = false
	w.unpark()
	for w.step(ctx) {
	}
	if got, want := strings.Join(svc.made, "|"), "online a|offline a|offline a"; got != want || svc.failed != deliveryAttempts {
		t.Fatalf("reports made %q after %d failures, want %q after %d", got, svc.failed, want, deliveryAttempts)
	}
	if len(w.users) != 0 {
		t.Fatalf("state kept after the offline was made: %v", w.users)
	}
}

// An offline report parked while the store is out of reach is made later
// with the time the user's last stream closed, so the caller-offline grace
// runs from then; when the user came back and left again meanwhile, from
// the last close.
func TestParkedOfflineKeepsItsTime(t *testing.T) {
	closed := []time.Time{time.UnixMilli(1_000), time.UnixMilli(2_000)}
	for _, reconnect := range []bool{false, true} {
		svc := &scriptedReports{}
		w := newWork(slog.New(slog.DiscardHandler), svc, nil)
		ctx := context.Background()
		w.presence("a", true, time.Time{})
		for w.step(ctx) {
		}
		w.presence("a", false, closed[0])
		svc.failing = true
		for w.step(ctx) {
		}
		want := closed[0]
		if reconnect {
			w.presence("a", true, time.Time{})
			w.presence("a", false, closed[1])
			want = closed[1]
		}
		svc.failing = false
		w.unpark()
		for w.step(ctx) {
		}
		if len(svc.since) != 1 || !svc.since[0].Equal(want) {
			t.Fatalf("reconnect %v: offline reports made with %v, want one with %v", reconnect, svc.since, want)
		}
	}
}

// scriptedReports is a Service for one goroutine stepping work by hand:
// during runs inside the next presence report, failing fails them.
type scriptedReports struct {
	made    []string
	since   []time.Time // of each offline report made
	failed  int
	failing bool
	during  func()
}

func (s *scriptedReports) MarkDelivered(context.Context, string, string, int64) error { return nil }
func (s *scriptedReports) UserOnline(_ context.Context, u string) error {
	return s.report("online " + u)
}
func (s *scriptedReports) UserOffline(_ context.Context, u string, since time.Time) error {
	if err := s.report("offline " + u); err != nil {
		return err
	}
	s.since = append(s.since, since)
	return nil
}

func (s *scriptedReports) report(r string) error {
	if f := s.during; f != nil {
		s.during = nil
		f()
	}
	if s.failing {
		s.failed++
		return errors.New("store unreachable")
	}
	s.made = append(s.made, r)
	return nil
}

// slowReports is a Service whose presence reports take cost each, as a
// caller's with many started calls do, and which records when each ran.
type slowReports struct {
	cost time.Duration
	mu   sync.Mutex
	runs []reportRun
}

type reportRun struct {
	online     bool
	start, end time.Time
}

func (s *slowReports) MarkDelivered(context.Context, string, string, int64) error { return nil }
func (s *slowReports) UserOnline(_ context.Context, _ string) error               { return s.run(true) }
func (s *slowReports) UserOffline(_ context.Context, _ string, _ time.Time) error {
	return s.run(false)
}

func (s *slowReports) run(online bool) error {
	start := time.Now()
	time.Sleep(s.cost)
	s.mu.Lock()
	s.runs = append(s.runs, reportRun{online: online, start: start, end: time.Now()})
	s.mu.Unlock()
	return nil
}

// A user whose presence reports are costly (a caller with many started
// calls: each report writes them all) and who opens and closes a stream
// in a loop gets its next report only paceFactor times the last one's
// cost after it, its changes meanwhile coalesced: it held the writer
// three quarters busy at nine openings a second (a review). The last
// state is still the one reported.
func TestCostlyPresenceReportsArePaced(t *testing.T) {
	svc := &slowReports{cost: 20 * time.Millisecond}
	w := newWork(slog.New(slog.DiscardHandler), svc, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { w.run(ctx) })
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	flips := 0
	for end := time.Now().Add(time.Second); time.Now().Before(end); flips++ {
		w.presence("mallory", flips%2 == 0, time.Now())
		time.Sleep(2 * time.Millisecond)
	}
	w.presence("mallory", true, time.Now()) // ends online
	wait.For(t, 10*time.Second, "the last report, online", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		w.mu.Lock()
		defer w.mu.Unlock()
		st := w.users["mallory"]
		return st != nil && st.applied && !st.busy && !st.queued && len(svc.runs) > 0 && svc.runs[len(svc.runs)-1].online
	})
	svc.mu.Lock()
	defer svc.mu.Unlock()
	for i := 1; i < len(svc.runs); i++ {
		prev, next := svc.runs[i-1], svc.runs[i]
		if !prev.online {
			continue // its state may have been forgotten (see pace)
		}
		if gap, cost := next.start.Sub(prev.end), prev.end.Sub(prev.start); gap < (paceFactor-1)*cost {
			t.Fatalf("report %d began %v after the last, which took %v: want %d times that", i, gap, cost, paceFactor)
		}
	}
	if len(svc.runs) > 10 {
		t.Fatalf("%d reports for %d changes in a second of %v reports", len(svc.runs), flips, svc.cost)
	}
	t.Logf("%d changes, %d reports", flips, len(svc.runs))
}
