package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The soak keeps a mixed load on the server for a long time and follows
// what a leak would make grow: goroutines, open file descriptors, heap and
// resident memory, as the server itself reports them on /metrics. Streams
// come and go (hang-ups and resumes), calls end every way a call can end,
// so a goroutine, a descriptor or a map entry kept by any of those paths
// shows as a steady rise once the warm-up is over.

// soakLoad is the state of a soak run.
type soakLoad struct {
	cycleLoad
	churnUsers []string

	accepted, rejected, cancelled, rungOut atomic.Int64
	churnOpens, churnEvents                atomic.Int64
}

func runSoak(ctx context.Context, t *target, tab *table, fig figures) error {
	cfg := t.cfg
	n := cfg.users &^ 1
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s-u%d", t.prefix, i)
	}
	churn := make([]string, cfg.churn)
	for i := range churn {
		churn[i] = fmt.Sprintf("%s-x%d", t.prefix, i)
	}
	if err := t.tokens.mint(append(users, churn...)...); err != nil {
		return err
	}
	l := &soakLoad{cycleLoad: cycleLoad{t: t, mb: newMailbox()}, churnUsers: churn}
	var badEvents atomic.Int64
	fmt.Fprintf(t.log, "loadgen: opening %d steady streams…\n", n)
	set, _, err := openStreams(ctx, t, users, nil, 128, true, cycleEvents(l.mb, func(err error) {
		badEvents.Add(1)
		l.fail(fmt.Errorf("bad event data: %w", err))
	}))
	if err != nil {
		return err
	}
	defer set.close()

	began := time.Now()
	end := began.Add(cfg.duration)
	loadCtx, stopLoad := context.WithDeadline(ctx, end)
	defer stopLoad()

	var wg sync.WaitGroup
	churnCounters := &streamCounters{}
	for _, u := range churn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.churnStream(loadCtx, u, churnCounters)
		}()
	}
	// Before the sampler starts: it writes to t.log too, its first sample
	// at once (a race the detector caught in CI).
	fmt.Fprintf(t.log, "loadgen: soak for %s: %.0f cycles/s over %d pairs, %d streams coming and going, a sample every %s…\n",
		cfg.duration, cfg.rate, n/2, len(churn), cfg.sampleEvery)
	var samples []soakSample
	var sampleErr error
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		samples, sampleErr = sampleServer(loadCtx, t, began)
	}()

	pairs := make(chan pair, n/2)
	for i := 0; i < n; i += 2 {
		pairs <- pair{k: i / 2, caller: users[i], invitee: users[i+1]}
	}
	l.paced(loadCtx, pairs, began)
	wg.Wait()
	<-sampled
	if err := ctx.Err(); err != nil {
		return err
	}
	if sampleErr != nil {
		return sampleErr
	}
	l.reportSoak(tab, fig, samples, time.Since(began), set.counters, churnCounters, badEvents.Load())
	return nil
}

// paced starts one cycle every 1/rate seconds on a free pair until ctx is
// done, then waits for the cycles in flight.
func (l *soakLoad) paced(ctx context.Context, pairs chan pair, began time.Time) {
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / l.t.cfg.rate)
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-time.After(time.Until(began.Add(time.Duration(i) * interval))):
		case <-ctx.Done():
			continue
		}
		var p pair
		select {
		case p = <-pairs:
		case <-ctx.Done():
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.soakCycle(context.WithoutCancel(ctx), p, i)
			pairs <- p
		}()
	}
	wg.Wait()
}

// soakCycle is one call on p that ends one of five ways, chosen by i:
// accepted (twice as often as the others), rejected, cancelled by the
// caller, or rung out (the invitation times out; a churning user is
// invited too, so streams that open find pending invitations).
func (l *soakLoad) soakCycle(ctx context.Context, p pair, i int) {
	l.started.Add(1)
	c, cfg := l.t.client, l.t.cfg
	invitees := []string{p.invitee}
	outcome := i % 5
	if outcome == 4 && len(l.churnUsers) > 0 {
		invitees = append(invitees, l.churnUsers[rand.IntN(len(l.churnUsers))])
	}
	body := fmt.Appendf(nil, `{"invitees":["%s"],"timeout":%d}`, strings.Join(invitees, `","`), int(cfg.callTimeout/time.Second))
	var res inviteResult
	sent, err := c.post(ctx, p.caller, "/calls", body, 201, &res)
	if err != nil {
		l.httpFail(ctx, err)
		return
	}
	l.httpInvite.add(time.Since(sent))
	at, ok := l.mb.wait(ctx, mailKey{p.invitee, res.CallID, gotInvitation}, cfg.eventTimeout)
	if !ok {
		l.lose(ctx, fmt.Errorf("callInvitationReceived for %s on %s not read within %s", res.CallID, p.invitee, cfg.eventTimeout))
		return
	}
	l.toInvitee.add(at.Sub(sent))
	path := "/calls/" + res.CallID
	switch outcome {
	case 0, 1:
		sent2, err := c.accept(ctx, p.invitee, res.CallID)
		if err != nil {
			l.httpFail(ctx, err)
			return
		}
		l.httpAccept.add(time.Since(sent2))
		at, ok = l.mb.wait(ctx, mailKey{p.caller, res.CallID, gotAccepted}, cfg.eventTimeout)
		if !ok {
			l.lose(ctx, fmt.Errorf("acceptance of %s not read on %s within %s", res.CallID, p.caller, cfg.eventTimeout))
			return
		}
		l.toCaller.add(at.Sub(sent2))
		l.accepted.Add(1)
	case 2:
		if _, err := c.post(ctx, p.invitee, path+"/reject", []byte(`{}`), 200, nil); err != nil {
			l.httpFail(ctx, err)
			return
		}
		l.rejected.Add(1)
	case 3:
		if _, err := c.post(ctx, p.caller, path+"/cancel", []byte(`{"invitees":[]}`), 200, nil); err != nil {
			l.httpFail(ctx, err)
			return
		}
		l.cancelled.Add(1)
	case 4:
		// Left ringing: the server's deadline ends it.
		l.rungOut.Add(1)
	}
	l.completed.Add(1)
}

// churnStream opens user's stream, holds it 1–15 s, hangs up, waits up to
// 2 s and opens it again, until ctx is done; every other time it resumes
// with Last-Event-ID, otherwise it opens fresh (and gets the pending
// invitations replayed).
func (l *soakLoad) churnStream(ctx context.Context, user string, counters *streamCounters) {
	var lastID int64
	for i := 0; ctx.Err() == nil; i++ {
		hold := time.Second + rand.N(14*time.Second)
		sctx, cancel := context.WithTimeout(ctx, hold)
		s := newStream(l.t.base, user, l.t.tokens.token(user), false, l.t.up, counters, func(*sseStream, *event) { l.churnEvents.Add(1) })
		if i%2 == 1 {
			s.lastID = lastID
		}
		s.run(sctx)
		cancel()
		if s.openedAt.Load() != 0 {
			l.churnOpens.Add(1)
		}
		lastID = s.lastID
		select {
		case <-time.After(rand.N(2 * time.Second)):
		case <-ctx.Done():
		}
	}
}

// soakSample is the server's figures at one instant.
type soakSample struct {
	at     time.Duration // since the load began
	values map[string]float64
}

// sampleServer reads the server's /metrics at once and then every
// cfg.sampleEvery until ctx is done, printing each sample as it goes.
func sampleServer(ctx context.Context, t *target, began time.Time) ([]soakSample, error) {
	var out []soakSample
	tick := time.NewTicker(t.cfg.sampleEvery)
	defer tick.Stop()
	for {
		s, err := sampleOnce(context.WithoutCancel(ctx), t, time.Since(began))
		if err != nil {
			return out, err
		}
		out = append(out, s)
		fmt.Fprintf(t.log, "loadgen: soak %s\n", s)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return out, nil
		}
	}
}

func sampleOnce(ctx context.Context, t *target, at time.Duration) (soakSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	status, body, err := t.client.get(ctx, "/metrics")
	if err != nil {
		return soakSample{}, fmt.Errorf("GET /metrics: %w", err)
	}
	if status != 200 {
		return soakSample{}, fmt.Errorf("GET /metrics: %d", status)
	}
	all := metricValues(body)
	s := soakSample{at: at, values: map[string]float64{}}
	for _, g := range soakGauges {
		v, ok := all[g.name]
		if !ok {
			return soakSample{}, fmt.Errorf("GET /metrics: no %s", g.name)
		}
		s.values[g.name] = v
	}
	return s, nil
}

func (s soakSample) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%-6s", s.at.Round(time.Second))
	for _, g := range soakGauges {
		fmt.Fprintf(&b, " %s=%.1f%s", strings.ReplaceAll(g.label, " ", "_"), s.values[g.name]/g.unit, g.suffix)
	}
	return b.String()
}

func (l *soakLoad) reportSoak(tab *table, fig figures, samples []soakSample, elapsed time.Duration, steady, churn *streamCounters, badEvents int64) {
	cfg := l.t.cfg
	tab.title = "callsig loadgen: soak"
	tab.add("server", "%s", cfg.url)
	tab.add("load", "%s at %.0f cycles/s over %d pairs, %d streams coming and going (held 1–15 s)", elapsed.Round(time.Second), cfg.rate, cfg.users/2, cfg.churn)
	tab.add("cycles", "%d started, %d completed: %d accepted, %d rejected, %d cancelled, %d rung out (timeout %s)",
		l.started.Load(), l.completed.Load(), l.accepted.Load(), l.rejected.Load(), l.cancelled.Load(), l.rungOut.Load(), cfg.callTimeout)
	tab.add("errors", "%d HTTP, %d events lost (not read within %s), %d bad events", l.errs.Load(), l.lost.Load(), cfg.eventTimeout, badEvents)
	if err := l.err(); err != nil {
		tab.add("first error", "%v", err)
	}
	tab.add("steady streams", "%d events read, %d reconnections", steady.events.Load(), steady.reconnects.Load())
	tab.add("churning streams", "%d opens, %d events read, %d failures", l.churnOpens.Load(), l.churnEvents.Load(), churn.failures.Load())
	for _, s := range samples {
		tab.add("sample", "%s", s)
	}
	tab.add("warm-up", "%s (samples before it are not fitted)", cfg.warmup)
	var notFlat []string
	slopes := map[string]float64{}
	for _, g := range soakGauges {
		pts := make([]point, len(samples))
		for i, s := range samples {
			pts[i] = point{at: s.at, v: s.values[g.name]}
		}
		tr := judge(g, pts, cfg.warmup)
		tab.add(g.label, "%s", tr.verdict())
		slopes[g.name] = round2(tr.slope)
		if tr.n >= 3 && !tr.flat {
			notFlat = append(notFlat, g.name)
		}
	}
	tab.dist("HTTP POST /calls", l.httpInvite.summarize())
	tab.dist("HTTP POST accept", l.httpAccept.summarize())
	tab.dist("delivery invitation", l.toInvitee.summarize())
	tab.dist("delivery acceptance", l.toCaller.summarize())

	fig["duration_s"] = round2(elapsed.Seconds())
	fig["rate_target"] = cfg.rate
	fig["cycles_started"] = l.started.Load()
	fig["cycles_completed"] = l.completed.Load()
	fig["errors"] = l.errs.Load()
	fig["lost_events"] = l.lost.Load()
	fig["bad_events"] = badEvents
	fig["churn_opens"] = l.churnOpens.Load()
	fig["samples"] = len(samples)
	fig["warmup_s"] = cfg.warmup.Seconds()
	fig["slope_per_min"] = slopes
	if notFlat == nil {
		notFlat = []string{}
	}
	fig["not_flat"] = notFlat
	first, last := samples[0], samples[len(samples)-1]
	for _, g := range soakGauges {
		fig[g.name+"_first"] = first.values[g.name]
		fig[g.name+"_last"] = last.values[g.name]
	}
}
