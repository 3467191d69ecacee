package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// pair is a caller and an invitee; a pair is in at most one cycle at a
// time, so each waits for exactly one event at a time. k numbers the pair;
// with several nodes it picks the pair's nodes (pairRoute).
type pair struct {
	k               int
	caller, invitee string
}

// cycleLoad is the state of a cycle run.
type cycleLoad struct {
	t  *target
	mb *mailbox

	started, completed, errs, lost atomic.Int64
	firstErr                       atomic.Pointer[error]

	httpInvite, httpAccept samples // request sent → answer read
	toInvitee, toCaller    samples // request sent → event read on the other side
	cycle                  samples // invite sent → caller read the acceptance

	perNode []*nodeLoad // by node index
}

// nodeLoad is one node's share of a cycle run: the cycles whose streams it
// holds, with the deliveries to them (made by requests to other nodes), and
// the requests it answered.
type nodeLoad struct {
	completed atomic.Int64
	delivery  samples // request sent (to another node) → event read on this node's stream
	http      samples // requests this node answered
}

func newNodeLoads(n int) []*nodeLoad {
	out := make([]*nodeLoad, n)
	for i := range out {
		out[i] = &nodeLoad{}
	}
	return out
}

func runCycle(ctx context.Context, t *target, tab *table, fig figures) error {
	cfg := t.cfg
	n := cfg.users &^ 1
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s-u%d", t.prefix, i)
	}
	if err := t.tokens.mint(users...); err != nil {
		return err
	}
	l := &cycleLoad{t: t, mb: newMailbox(), perNode: newNodeLoads(len(t.nodes))}
	var badEvents atomic.Int64
	fmt.Fprintf(t.log, "loadgen: opening %d streams…\n", n)
	streamNode := func(i int) int { return pairRoute(i/2, len(t.nodes)).streams }
	set, openTime, err := openStreams(ctx, t, users, streamNode, 128, true, cycleEvents(l.mb, func(err error) {
		badEvents.Add(1)
		l.fail(fmt.Errorf("bad event data: %w", err))
	}))
	if err != nil {
		return err
	}
	defer set.close()

	pairs := make(chan pair, n/2)
	for i := 0; i < n; i += 2 {
		pairs <- pair{k: i / 2, caller: users[i], invitee: users[i+1]}
	}
	workers := cfg.workers
	if workers <= 0 || workers > n/2 {
		workers = n / 2
	}
	if cfg.rate > 0 {
		fmt.Fprintf(t.log, "loadgen: cycles at %.0f/s for %s over %d pairs…\n", cfg.rate, cfg.duration, n/2)
	} else {
		fmt.Fprintf(t.log, "loadgen: cycles as fast as possible for %s, %d at once…\n", cfg.duration, workers)
	}
	began := time.Now()
	var behind time.Duration
	if cfg.rate > 0 {
		behind = l.paced(ctx, pairs, began)
	} else {
		l.closedLoop(ctx, pairs, workers, began)
	}
	elapsed := time.Since(began)
	if err := ctx.Err(); err != nil {
		return err
	}

	l.report(tab, fig, cycleRun{users: n, workers: workers, openTime: openTime, elapsed: elapsed, behind: behind, streams: set.counters, badEvents: badEvents.Load()})
	if t.hooks != nil {
		return t.hooks.report(ctx, t, tab, fig)
	}
	return nil
}

// cycleRun is what report needs to know about the run besides the samples.
type cycleRun struct {
	users, workers            int
	openTime, elapsed, behind time.Duration
	streams                   *streamCounters
	badEvents                 int64
}

func (l *cycleLoad) report(tab *table, fig figures, r cycleRun) {
	cfg := l.t.cfg
	completed := l.completed.Load()
	rate := float64(completed) / r.elapsed.Seconds()
	httpAll := merged(&l.httpInvite, &l.httpAccept)
	delivery := merged(&l.toInvitee, &l.toCaller)

	tab.title = "callsig loadgen: cycle"
	tab.add("server", "%s", cfg.url)
	tab.add("users (streams)", "%d, %d pairs, opened in %s", r.users, r.users/2, r.openTime.Round(time.Millisecond))
	if cfg.rate > 0 {
		tab.add("target rate", "%.0f cycles/s, %s (schedule fell behind by %s at most)", cfg.rate, cfg.duration, r.behind.Round(time.Millisecond))
	} else {
		tab.add("target rate", "as fast as possible, %d cycles at once, %s", r.workers, cfg.duration)
	}
	if cfg.keyed {
		tab.add("idempotency keys", "a fresh one on every POST")
	}
	tab.add("cycles", "%d started, %d completed in %s", l.started.Load(), completed, r.elapsed.Round(time.Millisecond))
	tab.add("cycles/s", "%.0f (%.0f HTTP requests/s)", rate, 2*rate)
	tab.add("errors", "%d HTTP, %d events lost (not read within %s), %d bad events", l.errs.Load(), l.lost.Load(), cfg.eventTimeout, r.badEvents)
	if err := l.err(); err != nil {
		tab.add("first error", "%v", err)
	}
	tab.add("streams", "%d events read, %d reconnections, %d failures", r.streams.events.Load(), r.streams.reconnects.Load(), r.streams.failures.Load())
	tab.dist("HTTP POST /calls", l.httpInvite.summarize())
	tab.dist("HTTP POST accept", l.httpAccept.summarize())
	tab.dist("HTTP (both)", httpAll.summarize())
	tab.dist("delivery invitation", l.toInvitee.summarize())
	tab.dist("delivery acceptance", l.toCaller.summarize())
	tab.dist("delivery (both)", delivery.summarize())
	tab.dist("whole cycle", l.cycle.summarize())

	fig["users"] = r.users
	fig["idempotency_keys"] = cfg.keyed
	fig["rate_target"] = cfg.rate
	fig["duration_s"] = round2(r.elapsed.Seconds())
	fig["cycles_started"] = l.started.Load()
	fig["cycles_completed"] = completed
	fig["cycles_per_sec"] = round2(rate)
	fig["errors"] = l.errs.Load()
	fig["lost_events"] = l.lost.Load()
	fig["bad_events"] = r.badEvents
	fig["stream_reconnects"] = r.streams.reconnects.Load()
	fig["open_time_ms"] = ms(r.openTime)
	httpAll.summarize().put(fig, "http")
	delivery.summarize().put(fig, "delivery")
	l.toInvitee.summarize().put(fig, "delivery_invitation")
	l.toCaller.summarize().put(fig, "delivery_acceptance")
	l.cycle.summarize().put(fig, "cycle")
	if cfg.cluster() {
		l.reportNodes(tab, fig, r)
	}
}

// reportNodes adds each node's share, and says how the load crossed nodes.
func (l *cycleLoad) reportNodes(tab *table, fig figures, r cycleRun) {
	nodes := l.t.nodes
	tab.add("backend", "PostgreSQL, %d node(s)%s", len(nodes), crossing(len(nodes)))
	var list []map[string]any
	for i, nl := range l.perNode {
		c := nl.completed.Load()
		d, h := nl.delivery.summarize(), nl.http.summarize()
		tab.add(fmt.Sprintf("node %d", i), "%s: %d cycles on its streams (%.0f/s), %d requests answered", nodes[i].url, c, float64(c)/r.elapsed.Seconds(), h.N)
		tab.dist(fmt.Sprintf("node %d: delivery to its streams", i), d)
		tab.dist(fmt.Sprintf("node %d: HTTP it answered", i), h)
		m := map[string]any{"node": i, "url": nodes[i].url, "cycles_completed": c, "cycles_per_sec": round2(float64(c) / r.elapsed.Seconds())}
		d.put(m, "delivery")
		h.put(m, "http")
		list = append(list, m)
	}
	fig["backend"] = "postgres"
	fig["node_count"] = len(nodes)
	fig["per_node"] = list
}

// crossing says how requests and streams were spread.
func crossing(nodes int) string {
	switch nodes {
	case 1:
		return ""
	case 2:
		return "; streams of pair k on node k mod 2, both requests to the other node"
	default:
		return fmt.Sprintf("; streams of pair k on node k mod %d, invitation to the next node, acceptance to the previous one", nodes)
	}
}

// closedLoop runs cycles back to back on workers goroutines until the
// duration is over, then waits for the cycles in flight.
func (l *cycleLoad) closedLoop(ctx context.Context, pairs chan pair, workers int, began time.Time) {
	end := began.Add(l.t.cfg.duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				p := <-pairs
				l.run(ctx, p)
				pairs <- p
			}
		}()
	}
	wg.Wait()
}

// paced starts cycles on a fixed schedule (open loop: a slow answer does
// not delay the next start, so latency is not hidden), each on a free pair.
// It returns how far the starts fell behind the schedule at most (no free
// pair, or the generator itself was late).
func (l *cycleLoad) paced(ctx context.Context, pairs chan pair, began time.Time) time.Duration {
	var wg sync.WaitGroup
	var behind time.Duration
	interval := time.Duration(float64(time.Second) / l.t.cfg.rate)
	for i := 0; ; i++ {
		at := began.Add(time.Duration(i) * interval)
		if at.Sub(began) >= l.t.cfg.duration || ctx.Err() != nil {
			break
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		var p pair
		select {
		case p = <-pairs:
		case <-ctx.Done():
			continue
		}
		behind = max(behind, time.Since(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, p)
			pairs <- p
		}()
	}
	wg.Wait()
	return behind
}

// run is one full cycle on p.
func (l *cycleLoad) run(ctx context.Context, p pair) {
	l.started.Add(1)
	cfg := l.t.cfg
	r := pairRoute(p.k, len(l.t.nodes))
	home := l.perNode[r.streams]
	res, sent, err := l.t.nodes[r.invite].client.invite(ctx, p.caller, p.invitee, cfg.callTimeout)
	if err != nil {
		l.httpFail(ctx, err)
		return
	}
	l.httpInvite.add(time.Since(sent))
	l.perNode[r.invite].http.add(time.Since(sent))
	at, ok := l.mb.wait(ctx, mailKey{p.invitee, res.CallID, gotInvitation}, cfg.eventTimeout)
	if !ok {
		l.lose(ctx, fmt.Errorf("callInvitationReceived for %s on %s not read within %s", res.CallID, p.invitee, cfg.eventTimeout))
		return
	}
	l.toInvitee.add(at.Sub(sent))
	home.delivery.add(at.Sub(sent))

	sent2, err := l.t.nodes[r.accept].client.accept(ctx, p.invitee, res.CallID)
	if err != nil {
		l.httpFail(ctx, err)
		return
	}
	l.httpAccept.add(time.Since(sent2))
	l.perNode[r.accept].http.add(time.Since(sent2))
	at, ok = l.mb.wait(ctx, mailKey{p.caller, res.CallID, gotAccepted}, cfg.eventTimeout)
	if !ok {
		l.lose(ctx, fmt.Errorf("acceptance of %s not read on %s within %s", res.CallID, p.caller, cfg.eventTimeout))
		return
	}
	l.toCaller.add(at.Sub(sent2))
	home.delivery.add(at.Sub(sent2))
	l.cycle.add(at.Sub(sent))
	l.completed.Add(1)
	home.completed.Add(1)
}

func (l *cycleLoad) httpFail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	l.errs.Add(1)
	l.fail(err)
}

func (l *cycleLoad) lose(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	l.lost.Add(1)
	l.fail(err)
}

func (l *cycleLoad) fail(err error) { l.firstErr.CompareAndSwap(nil, &err) }

func (l *cycleLoad) err() error {
	if p := l.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}
