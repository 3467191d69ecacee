package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"callsig/calls"
	"callsig/db/storetest"
	"callsig/internal/fakeclock"
	"callsig/internal/wait"
)

// BenchmarkUpdate measures durable transactions per second (synchronous=FULL)
// at 1, 16 and 64 concurrent requests, each creating a small call with one
// event, the size of a typical invitation, with the WAL fsynced by the
// pipelined syncer (the default) and inside each COMMIT (inline, SQLite's
// own FULL). Run with:
//
//	go test -run '^$' -bench Update -benchtime 3s ./db/sqlite/
func BenchmarkUpdate(b *testing.B) {
	for _, mode := range []struct {
		name   string
		inline bool
	}{{"pipelined", false}, {"inline", true}} {
		for _, conc := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%s/concurrent=%d", mode.name, conc), func(b *testing.B) {
				benchUpdate(b, Options{InlineSync: mode.inline}, conc)
			})
		}
	}
}

// openBench opens a store on a fresh file for one benchmark.
func openBench(b *testing.B, opts Options) *Store {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchUpdate(b *testing.B, opts Options, conc int) {
	s := openBench(b, opts)
	ctx := context.Background()
	var n atomic.Int64
	before := s.commits.Load()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				ch := storetest.NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob")
				if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	if commits := s.commits.Load() - before; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "tx/commit")
	}
}

// BenchmarkFireDeadlines measures how fast the scheduler fires due
// deadlines on SQLite: b.N calls, each with one invitee whose invitation
// times out, all due at once; the clock passes them and the timer runs
// until every timeout event has committed (ns/op is per deadline).
// "batched" is the scheduler as wired; "each" hides any optional store
// capability, so the scheduler reads DueDeadlines and fires every deadline
// through its own Service.Expire (one savepoint each, group-committed): the
// path SQLite took before it fired deadlines in batches. cpu-µs/deadline
// is the process's CPU time over the same span, write-p99-ms the p99
// latency of small writes made one after the other meanwhile (what a
// request waits behind the deadlines firing). In "batched" and "each"
// every call has a caller and an invitee of its own, numbered in the
// order the calls are made and fire, so the rows indexed by user that a
// claim writes sit side by side; "batched-1000-pairs" spreads the calls
// over 1,000 caller-invitee pairs, as loadgen's deadlines mode does, so
// that each of them writes a page of its own in every index by user.
// Run with:
//
//	go test -run '^$' -bench FireDeadlines -benchtime 20000x ./db/sqlite/
func BenchmarkFireDeadlines(b *testing.B) {
	batched := func(s *Store) calls.Store { return s }
	modes := []struct {
		name  string
		wrap  func(*Store) calls.Store
		pairs int // 0: a pair per call
	}{
		{"batched", batched, 0},
		{"each", func(s *Store) calls.Store { return struct{ calls.Store }{s} }, 0},
		{"batched-1000-pairs", batched, 1000},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) { benchFireDeadlines(b, m.wrap, m.pairs) })
	}
}

func benchFireDeadlines(b *testing.B, wrap func(*Store) calls.Store, pairs int) {
	s := openTest(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const perTx = 500
	for i := 0; i < b.N; i += perTx {
		err := s.Update(ctx, func(tx calls.Tx) error {
			for j := i; j < min(i+perTx, b.N); j++ {
				u := j
				if pairs > 0 {
					u = j * 7919 % pairs // 7919 is prime: consecutive calls go to pairs far apart
				}
				ch := storetest.NewCall(fmt.Sprintf("c%07d", j), fmt.Sprintf("caller%d", u), 1_000, fmt.Sprintf("callee%d", u))
				if err := tx.Save(ctx, ch); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	clock := fakeclock.New(time.UnixMilli(1_000))
	fired := &timeouts{}
	svc := calls.NewService(calls.Options{Store: wrap(s), Clock: clock, Notifier: fired})
	done := make(chan error, 1)
	before, cpuBefore := s.commits.Load(), processCPU(b)
	b.ResetTimer()
	go func() { done <- svc.Run(ctx) }()
	clock.Advance(40 * time.Second) // every invitation's 30 s timeout is due
	stopProbe, probe := probeWrites(b, s)
	wait.For(b, 10*time.Minute, "every deadline to fire", func() bool { return fired.n.Load() >= int64(b.N) })
	b.StopTimer()
	commits, cpu := s.commits.Load()-before, processCPU(b)-cpuBefore
	close(stopProbe)
	writes := <-probe
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if n := fired.n.Load(); n != int64(b.N) {
		b.Fatalf("%d timeout events for %d deadlines", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deadlines/s")
	if commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "deadlines/commit")
	}
	// CPU time, all goroutines: on a shared machine it moves less than the
	// wall time with what else runs.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/deadline")
	if len(writes) > 0 {
		slices.Sort(writes)
		p99 := writes[min(len(writes)*99/100, len(writes)-1)]
		b.ReportMetric(float64(p99.Microseconds())/1000, "write-p99-ms")
	}
}

// probeWrites creates small calls through s, one after the other, until
// stop is closed, and then sends how long each Update took: what a request
// waits behind the deadlines firing.
func probeWrites(b *testing.B, s *Store) (stop chan struct{}, took chan []time.Duration) {
	stop, took = make(chan struct{}), make(chan []time.Duration, 1)
	ctx := context.Background()
	go func() {
		var lat []time.Duration
		defer func() { took <- lat }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ch := storetest.NewCall(fmt.Sprintf("probe%07d", i), "prober", 41_000, fmt.Sprintf("probed%d", i))
			start := time.Now()
			if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
	}()
	return stop, took
}

// processCPU is the CPU time (user and system) the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeouts is a calls.Notifier counting the timeout events committed.
type timeouts struct{ n atomic.Int64 }

func (t *timeouts) Committed(evs []calls.Event, _ int) {
	for _, e := range evs {
		if e.Type == calls.EventTimeout {
			t.n.Add(1)
		}
	}
}

// BenchmarkCycle measures a call's writes through the service, with the
// writer's call cache and without it: each op is an invitation, its
// delivery mark and its accept (the three writes of loadgen's cycle, no
// HTTP, no streams), run by 16 or 64 workers at once. cpu-µs/cycle is the
// process's CPU time per cycle, which moves less than the wall time on a
// shared machine. The invitees are numbered in the order they are
// called, so their rows in the indexes by user sit side by side;
// "spread-invitees" names them far apart, as random user ids are, so that
// each writes pages of its own. Run with:
//
//	go test -run '^$' -bench Cycle -benchtime 10000x -count 2 ./db/sqlite/
func BenchmarkCycle(b *testing.B) {
	for _, conc := range []int{16, 64} {
		for _, cache := range []bool{true, false} {
			b.Run(fmt.Sprintf("concurrent=%d/cache=%t", conc, cache), func(b *testing.B) {
				benchCycle(b, Options{NoCallCache: !cache}, conc, false)
			})
		}
	}
	b.Run("concurrent=64/cache=true/spread-invitees", func(b *testing.B) { benchCycle(b, Options{}, 64, true) })
}

func benchCycle(b *testing.B, opts Options, conc int, spread bool) {
	s := openBench(b, opts)
	ctx := context.Background()
	// The server's default bound on started calls: every invitation asks
	// whether its caller is busy.
	svc := calls.NewService(calls.Options{Store: s, Config: calls.Config{MaxStartedCalls: 1000}})
	var n atomic.Int64
	cpuBefore := processCPU(b)
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			caller := calls.Actor{UserID: fmt.Sprintf("caller%d", w), Device: "phone"}
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				u := i
				if spread {
					// Both prime: a name of its own for each of the
					// first 1,000,003 cycles. Past that a name comes
					// back while its user is still in a call, and
					// Invite refuses it (busy).
					u = i * 7919 % 1_000_003
				}
				callee := calls.Actor{UserID: fmt.Sprintf("callee%d", u), Device: "phone"}
				r, err := svc.Invite(ctx, caller, calls.InviteInput{Invitees: []string{callee.UserID}})
				if err == nil {
					err = svc.MarkDelivered(ctx, r.CallID, callee.UserID, 0)
				}
				if err == nil {
					_, err = svc.Accept(ctx, callee, r.CallID, "")
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
	b.ReportMetric(float64((processCPU(b)-cpuBefore).Microseconds())/float64(b.N), "cpu-µs/cycle")
}

// BenchmarkPresenceStaleCalls measures one stream opening and closing
// (Service.UserOnline, then UserOffline) for a caller holding 8,000
// started advanced calls that presence cannot change: untracked, every
// invitee timed out, the caller alone in accepted. A backend can leave
// such calls behind, and a hostile user can pile them up; they must not
// make every stream of that user a scan through the writer.
//
//	go test -run '^$' -bench PresenceStaleCalls ./db/sqlite/
func BenchmarkPresenceStaleCalls(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	const stale, perTx = 8000, 500
	for i := 0; i < stale; i += perTx {
		err := s.Update(ctx, func(tx calls.Tx) error {
			for j := i; j < min(i+perTx, stale); j++ {
				ch := storetest.NewCall(fmt.Sprintf("stale%05d", j), "mallory", 1_000, "victim")
				ch.Call.Mode = calls.ModeAdvanced
				ch.Call.Users[1].State, ch.Call.Users[1].TimeoutAt = calls.StateTimeout, 0
				ch.Events = nil
				if err := tx.Save(ctx, ch); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	svc := calls.NewService(calls.Options{Store: s})
	commits := s.commits.Load()
	b.ResetTimer()
	for range b.N {
		if err := svc.UserOnline(ctx, "mallory"); err != nil {
			b.Fatal(err)
		}
		if err := svc.UserOffline(ctx, "mallory", time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(s.commits.Load()-commits)/float64(b.N), "commits/op")
}
