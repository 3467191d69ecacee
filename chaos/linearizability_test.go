package chaos

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// TestLinearizability sends random concurrent operations of both modes
// (create, accept, reject, cancel, invite during the call, join, quit,
// end, reads) from a few clients on a few shared calls over real HTTP,
// while a dedicated client moves the fake clock so invitations time out and
// become notYetReceived, and one user keeps a stream open so its
// invitations become received. The recorded history must be linearizable
// against the sequential model of the seed's state machine
// (callmodel_test.go). A failing history is written as porcupine's HTML
// visualization and its path printed.
func TestLinearizability(t *testing.T) {
	for _, b := range chaosBackends(t) {
		t.Run(b.String(), func(t *testing.T) { checkLinearizability(t, b) })
	}
}

func checkLinearizability(t *testing.T, backend testkit.Backend) {
	const (
		clients = 6
		slots   = 3
		// Each tick moves the server's clock by tickStep, once every
		// requestsPerTick requests and at least every tickEvery of real
		// time: invitations (1–2 s) time out after a few ticks. Paced by
		// requests, the number of operations a call sees before its
		// invitations time out does not depend on how fast the machine
		// answers; paced by real time alone, a fast machine ended every
		// call by request before any timed out, and the history exercised
		// neither timeout nor notYetReceived.
		tickStep        = 250 * time.Millisecond
		tickEvery       = 40 * time.Millisecond
		requestsPerTick = 6
		tickPoll        = 2 * time.Millisecond
	)
	// The load runs for run, and on a slow (or busy) machine on until the
	// history holds enough operations to exercise every rule, up to most.
	run, enough, most, checkTimeout := 8*time.Second, 800, 20*time.Second, time.Minute
	if *long {
		run, enough, most, checkTimeout = 3*time.Minute, 0, 3*time.Minute, 10*time.Minute
	}
	srv := testkit.Start(t, testkit.WithBackend(backend), testkit.WithFakeClock(), testkit.WithConfig(func(c *app.Config) {
		c.MaxCallUsers = maxUsers
		c.NotReceivedAfter = notReceivedAfter * time.Millisecond
		// The model checks each call on its own; the bound on a user's
		// started calls is across calls, and a long run's five users
		// reach it with the advanced calls left to their callers.
		c.MaxStartedCalls = 0
	}))
	// One user listens all along, so its invitations become received; the
	// others never do. Its token outlasts the run: the stream counts it
	// down on the server's fake clock, which a long run on a fast machine
	// moves past an hour (ticks at most every tickPoll: 3 minutes make at
	// most 90,000, 6.25 hours, then the settle's hour), and a stream ended
	// by its token makes its user a caller gone offline, whose calls the
	// model does not expect to end.
	srv.OpenStream(testkit.StreamOptions{User: streamUser, Device: "d1", NoAuthHeader: true,
		Header: http.Header{"Authorization": {"Bearer " + srv.TokenFor(streamUser, 24*time.Hour)}}})

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d clients on %d calls for %v (and on to %d requests, at most %v)", seed, clients, slots, run, enough, most)
	d := newDriver(srv, slots, clients)
	t.Cleanup(d.client.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), most)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { d.runClient(ctx, i, rand.New(rand.NewPCG(seed, uint64(i)))) })
	}
	wg.Go(func() {
		tk := time.NewTicker(tickPoll)
		defer tk.Stop()
		lastTick, lastRequests := time.Now(), 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				n := d.requests()
				if n-lastRequests < requestsPerTick && time.Since(lastTick) < tickEvery {
					continue
				}
				d.tick(clients, tickStep)
				lastTick, lastRequests = time.Now(), n
				if time.Since(d.start) >= run && n >= enough {
					cancel()
				}
			}
		}
	})
	wg.Wait()
	began := time.Now()
	d.settle(clients, 10*time.Second)
	t.Logf("settled %d calls in %v", len(d.created), time.Since(began).Round(time.Millisecond))

	outcomes, seen := summary(d.ops)
	t.Logf("%d requests and %d ticks on %d calls; outcomes:%s\nuser states seen by reads:%s", d.sent, len(d.ops)-d.sent, len(d.created), formatCounts(outcomes), formatCounts(seen))
	checkHistory(t, d.ops, checkTimeout)
	wantExercised(t, outcomes, seen)
}

// checkHistory fails the test unless history is linearizable, leaving the
// visualization of a failing one in a directory that outlives the test.
func checkHistory(t *testing.T, history []porcupine.Operation, timeout time.Duration) {
	t.Helper()
	m := newModel()
	began := time.Now()
	res := porcupine.CheckOperationsTimeout(m, history, timeout)
	t.Logf("porcupine: %s in %v", res, time.Since(began).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	res, info := porcupine.CheckOperationsVerbose(m, history, timeout)
	dir, err := os.MkdirTemp("", "callsig-linearizability-")
	if err != nil {
		t.Fatalf("history is %s; and no directory for its visualization: %v", res, err)
	}
	path := filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(m, info, path); err != nil {
		t.Fatalf("history is %s; writing its visualization: %v", res, err)
	}
	why := "not linearizable against the seed's state machine"
	if res == porcupine.Unknown {
		why = "undecided: porcupine ran out of time (" + timeout.String() + ")"
	}
	t.Errorf("history is %s; its visualization: %s", why, path)
	logFailingCall(t, m, history)
}

// logFailingCall prints the operations of the first call whose history
// fails on its own, for a reader without a browser (a CI log).
func logFailingCall(t *testing.T, m porcupine.Model, history []porcupine.Operation) {
	t.Helper()
	whole := m
	whole.Partition = nil
	for _, ops := range m.Partition(history) {
		if porcupine.CheckOperationsTimeout(whole, ops, 10*time.Second) == porcupine.Ok {
			continue
		}
		slices.SortFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		var b strings.Builder
		for _, op := range ops {
			if op.Input.(callInput).Kind == opTick {
				continue // each operation shows the clock it saw
			}
			fmt.Fprintf(&b, "\n  [%d..%d] client %d: %s", op.Call/1000, op.Return/1000, op.ClientId, describeOperation(op.Input, op.Output))
		}
		t.Logf("the first call that is not linearizable (real times in µs, t= the server clock around the request; ticks left out):%s", b.String())
		return
	}
}

// wantExercised fails when the run was too tame to prove anything: every
// action succeeded at least once, and reads saw every state a user can
// reach.
func wantExercised(t *testing.T, outcomes, seen map[string]int) {
	t.Helper()
	for _, k := range []string{"create 201", "accept 200", "reject 200", "cancel 200", "invite 200", "join 200", "quit 200", "end 200", "get 200",
		"accept 409 call_ended", "accept 409 invalid_state", "join 409 wrong_mode", "cancel 403 forbidden"} {
		if outcomes[k] == 0 {
			t.Errorf("no %q in the history: the mix of operations no longer exercises it", k)
		}
	}
	for _, s := range []string{inviting, received, notYetReceived, accepted, rejected, cancelled, timedOut, quit} {
		if seen[s] == 0 {
			t.Errorf("no read saw a user in %s", s)
		}
	}
}
