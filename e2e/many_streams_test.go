package e2e

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"callsig/calls"
	"callsig/internal/app"
	"callsig/internal/testkit"
)

// One server holds 1,000 concurrent streams (250 users with 4 devices
// each); an invitation to every user arrives on every one of its streams,
// each is reported delivered once, and the streams-open gauge counts them.
// (Four devices per user keep the event log, which the race detector makes
// slow to write, at a quarter of 1,000 distinct users' worth.)
func TestThousandStreams(t *testing.T) {
	const users, devices = 250, 4
	// NORMAL: this story is about streams, not about fsync per commit.
	s := testkit.Start(t, testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) { c.Synchronous = "NORMAL" }))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	start := time.Now()
	names := make([]string, users)
	streams := make([][]*testkit.Stream, users)
	for i := range users {
		names[i] = fmt.Sprintf("u%03d", i)
		streams[i] = make([]*testkit.Stream, devices)
	}
	// One goroutine per device, so the opens overlap.
	var wg sync.WaitGroup
	errs := make([]error, devices)
	for d := range devices {
		wg.Go(func() {
			for i := range users {
				st, err := s.TryStream(testkit.StreamOptions{User: names[i], Device: fmt.Sprint("device", d)})
				if err != nil {
					errs[d] = err
					return
				}
				streams[i][d] = st
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	opened := time.Since(start)
	if got := scrapeMetric(t, s, "callsig_sse_streams_open"); got != users*devices {
		t.Fatalf("streams open: %v, want %d", got, users*devices)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)

	start = time.Now()
	callOf := map[string]string{}
	caller := s.Client("caller")
	caller.SkipSpec = true
	for i := 0; i < users; i += calls.MaxInvitees {
		group := names[i:min(i+calls.MaxInvitees, users)]
		id := caller.Invite(map[string]any{"timeout": 600}, group...).CallID
		for _, u := range group {
			callOf[u] = id
		}
	}
	invited := time.Since(start)
	var worst time.Duration
	for i, list := range streams {
		for _, st := range list {
			e := st.WaitFor(string(calls.EventReceived), nil, 20*time.Second)
			if e.CallID() != callOf[names[i]] {
				t.Fatalf("%s got %v, want the invitation to %s", names[i], e, callOf[names[i]])
			}
			worst = max(worst, e.At.Sub(start))
		}
	}
	// Each user's delivery is reported once: one "received" change per
	// user, seen by each of its devices.
	for i, list := range streams {
		for _, st := range list {
			st.WaitFor(string(calls.EventUserStateChanged), func(e testkit.Event) bool {
				return e.Users()[names[i]] == string(calls.StateReceived)
			}, 20*time.Second)
		}
	}
	for _, u := range []string{names[0], names[users/2], names[users-1]} {
		c := s.Client(u).GetCall(callOf[u])
		if testkit.UserState(c, u) != calls.StateReceived {
			t.Fatalf("%s: %s, want received", u, testkit.UserState(c, u))
		}
	}
	t.Logf("%d streams opened in %v (test process heap +%.1f KiB per stream, client and server); invitations to %d users committed in %v, on all streams within %v",
		users*devices, opened, float64(after.HeapAlloc-before.HeapAlloc)/1024/(users*devices), users, invited, worst)
}
