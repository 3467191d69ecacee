package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// invitation is one pending invitation the deadlines mode created.
type invitation struct {
	callID   string
	acked    time.Time // the answer to POST /calls was read
	deadline time.Time // the server's createTime + timeout
	node     int       // the node that created it (and armed its deadline)
}

// timeouts records when each call's callInvitationTimeout was read, and
// how many times: each call has one invitee with one stream, so a deadline
// that fired exactly once cluster-wide is read exactly once.
type timeouts struct {
	mu    sync.Mutex
	at    map[string]time.Time
	n     atomic.Int64 // calls with a timeout read
	extra atomic.Int64 // timeouts read again for a call that had one
}

func (tm *timeouts) onEvent(bad func(error)) func(*sseStream, *event) {
	return func(s *sseStream, ev *event) {
		if ev.typ != "callInvitationTimeout" {
			return
		}
		var d eventData
		if err := json.Unmarshal(ev.data, &d); err != nil {
			bad(err)
			return
		}
		tm.mu.Lock()
		if _, dup := tm.at[d.CallID]; !dup {
			tm.at[d.CallID] = ev.at
			tm.n.Add(1)
		} else {
			tm.extra.Add(1)
		}
		tm.mu.Unlock()
	}
}

func runDeadlines(ctx context.Context, t *target, tab *table, fig figures) error {
	cfg := t.cfg
	invitees, callers := make([]string, cfg.users), make([]string, cfg.users)
	for i := range invitees {
		invitees[i] = fmt.Sprintf("%s-i%d", t.prefix, i)
		callers[i] = fmt.Sprintf("%s-c%d", t.prefix, i) // no stream: a backend calling the API
	}
	if err := t.tokens.mint(append(invitees, callers...)...); err != nil {
		return err
	}
	tm := &timeouts{at: map[string]time.Time{}}
	var badEvents atomic.Int64
	fmt.Fprintf(t.log, "loadgen: opening %d invitee streams…\n", len(invitees))
	streamNode := func(u int) int { return pairRoute(u, len(t.nodes)).streams }
	set, openTime, err := openStreams(ctx, t, invitees, streamNode, 128, true, tm.onEvent(func(error) { badEvents.Add(1) }))
	if err != nil {
		return err
	}
	defer set.close()

	fmt.Fprintf(t.log, "loadgen: creating %d invitations with a %s timeout…\n", cfg.invitations, cfg.callTimeout)
	created, createTime, errs, firstErr := createInvitations(ctx, t, callers, invitees)
	if err := ctx.Err(); err != nil {
		return err
	}
	pendingAfterCreate := int64(len(created)) - tm.n.Load()

	var rs restart
	if cfg.restart {
		rs.pendingAtKill = int64(len(created)) - tm.n.Load()
		if err := rs.run(ctx, t); err != nil {
			return err
		}
	}
	if err := waitTimeouts(ctx, t, tm, created); err != nil {
		return err
	}

	lt := measureLateness(t.cfg, tm, created, &rs, len(t.nodes))

	tab.title = "callsig loadgen: deadlines"
	tab.add("server", "%s", cfg.url)
	tab.add("invitee streams", "%d, opened in %s", len(invitees), openTime.Round(time.Millisecond))
	tab.add("invitations", "%d created in %s (%.0f/s), timeout %s, %d HTTP errors", len(created), createTime.Round(time.Millisecond), float64(len(created))/createTime.Seconds(), cfg.callTimeout, errs)
	if firstErr != nil {
		tab.add("first error", "%v", firstErr)
	}
	tab.add("pending once created", "%d", pendingAfterCreate)
	tab.add("timeouts read", "%d of %d (%d missing, %d early, %d bad events)", tm.n.Load(), len(created), lt.missing, lt.early, badEvents.Load())
	tab.add("duplicate timeouts", "%d (a call's callInvitationTimeout read more than once)", tm.extra.Load())
	tab.add("streams", "%d events read, %d reconnections", set.counters.events.Load(), set.counters.reconnects.Load())
	if cfg.restart {
		tab.add("restart", "SIGKILL with %d pending, down %s, ready (deadlines re-armed) %s after exec", rs.pendingAtKill, cfg.down, rs.rearm.Round(time.Millisecond))
		if lt.overdue.N > 0 {
			tab.add("due while down", "%d, all fired %s after exec", lt.overdue.N, lt.lastOverdue.Sub(rs.execAt).Round(time.Millisecond))
		}
	}
	tab.dist("lateness vs ack+timeout", lt.late)
	tab.dist("lateness vs createTime+timeout", lt.lateServer)
	if lt.overdue.N > 0 {
		tab.dist("due while down: after ready", lt.overdue)
	}

	fig["invitations"] = len(created)
	fig["create_per_sec"] = round2(float64(len(created)) / createTime.Seconds())
	fig["timeout_s"] = int(cfg.callTimeout / time.Second)
	fig["pending_after_create"] = pendingAfterCreate
	fig["timeouts_received"] = tm.n.Load()
	fig["missing"] = lt.missing
	fig["early"] = lt.early
	fig["errors"] = errs
	fig["bad_events"] = badEvents.Load()
	fig["duplicate_timeouts"] = tm.extra.Load()
	lt.late.put(fig, "timeout_lateness")
	lt.lateServer.put(fig, "timeout_lateness_vs_create")
	if cfg.restart {
		fig["pending_at_kill"] = rs.pendingAtKill
		fig["rearm_ms"] = ms(rs.rearm)
		fig["due_while_down"] = lt.overdue.N
		if !lt.lastOverdue.IsZero() {
			fig["restart_all_fired_ms"] = ms(lt.lastOverdue.Sub(rs.execAt))
		}
		lt.overdue.put(fig, "due_while_down_after_ready")
	}
	if cfg.cluster() {
		reportDeadlineNodes(t, tab, fig, created, lt)
	}
	return nil
}

// reportDeadlineNodes adds, per node, the deadlines it created and how late
// they fired (whichever node fired them).
func reportDeadlineNodes(t *target, tab *table, fig figures, created []invitation, lt lateness) {
	n := len(t.nodes)
	spread := ""
	if n > 1 {
		spread = "; invitee u's stream on node u mod N, its invitations created on node u+1 mod N"
	}
	tab.add("backend", "PostgreSQL, %d node(s)%s", n, spread)
	perNode := make([]int, n)
	for _, inv := range created {
		perNode[inv.node]++
	}
	var list []map[string]any
	for i, nd := range t.nodes {
		tab.add(fmt.Sprintf("node %d", i), "%s: created %d invitations", nd.url, perNode[i])
		tab.dist(fmt.Sprintf("node %d: lateness vs createTime+timeout", i), lt.perNode[i])
		m := map[string]any{"node": i, "url": nd.url, "invitations": perNode[i]}
		lt.perNode[i].put(m, "timeout_lateness_vs_create")
		list = append(list, m)
	}
	fig["backend"] = "postgres"
	fig["node_count"] = n
	fig["per_node"] = list
}

// lateness is how late the timeouts arrived.
type lateness struct {
	// late is measured from the answer to POST /calls plus the timeout (as
	// a client sees it), lateServer from the call's createTime plus the
	// timeout: the server's own deadline, a little before the answer was
	// read, so the stricter of the two.
	late, lateServer summary
	// overdue: deadlines that fell due while the server was down, measured
	// from the restarted server's readiness.
	overdue     summary
	lastOverdue time.Time
	// perNode is lateServer by the node that created the invitation.
	perNode        []summary
	missing, early int64
}

func measureLateness(cfg config, tm *timeouts, created []invitation, rs *restart, nodes int) lateness {
	var lt lateness
	var late, lateServer, overdue samples
	byNode := make([]samples, nodes)
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for _, inv := range created {
		at, ok := tm.at[inv.callID]
		if !ok {
			lt.missing++
			continue
		}
		if cfg.restart && !inv.deadline.Before(rs.killedAt) && inv.deadline.Before(rs.readyAt) {
			// Fell due while the server was down: it fires after the start.
			overdue.add(at.Sub(rs.readyAt))
			if at.After(lt.lastOverdue) {
				lt.lastOverdue = at
			}
			continue
		}
		late.add(at.Sub(inv.acked.Add(cfg.callTimeout)))
		d := at.Sub(inv.deadline)
		lateServer.add(d)
		byNode[inv.node].add(d)
		if d < -time.Millisecond { // createTime has millisecond resolution
			lt.early++
		}
	}
	lt.late, lt.lateServer, lt.overdue = late.summarize(), lateServer.summarize(), overdue.summarize()
	for i := range byNode {
		lt.perNode = append(lt.perNode, byNode[i].summarize())
	}
	return lt
}

// restart is a crash (SIGKILL) of every spawned node once every invitation
// is committed, then new processes on the same database after cfg.down.
type restart struct {
	pendingAtKill             int64
	killedAt, execAt, readyAt time.Time
	// rearm is exec → /readyz answers (on every node): the database opened
	// (and recovered from the crash), the deadlines re-armed, the listener
	// up.
	rearm time.Duration
}

func (rs *restart) run(ctx context.Context, t *target) error {
	srvs := t.servers()
	fmt.Fprintf(t.log, "loadgen: killing %d server(s) with %d invitations pending…\n", len(srvs), rs.pendingAtKill)
	t.up.shut()
	defer t.up.open()
	rs.killedAt = time.Now()
	for _, s := range srvs {
		s.kill()
	}
	select {
	case <-time.After(t.cfg.down):
	case <-ctx.Done():
		return ctx.Err()
	}
	rs.execAt = time.Now()
	errs := make([]error, len(srvs))
	took := make([]time.Duration, len(srvs))
	var wg sync.WaitGroup
	for i, s := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if took[i], errs[i] = s.start(ctx); errs[i] != nil {
				errs[i] = fmt.Errorf("restart node %d: %w", i, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	rs.rearm = slices.Max(took)
	rs.readyAt = rs.execAt.Add(rs.rearm)
	t.up.open()
	fmt.Fprintf(t.log, "loadgen: restarted and ready in %s\n", rs.rearm.Round(time.Millisecond))
	return nil
}

// waitTimeouts waits for the timeout of every invitation. It gives up once
// the last deadline is -event-timeout past and no timeout has arrived for
// as long (a backlog may take a while to fire, but it makes progress).
func waitTimeouts(ctx context.Context, t *target, tm *timeouts, created []invitation) error {
	var last time.Time
	for _, inv := range created {
		if inv.deadline.After(last) {
			last = inv.deadline
		}
	}
	fmt.Fprintf(t.log, "loadgen: waiting for %d timeouts (the last is due in %s)…\n", len(created), time.Until(last).Round(time.Second))
	seen, progress := tm.n.Load(), time.Now()
	for tm.n.Load() < int64(len(created)) {
		if n := tm.n.Load(); n != seen {
			seen, progress = n, time.Now()
		}
		if time.Since(last) > t.cfg.eventTimeout && time.Since(progress) > t.cfg.eventTimeout {
			return nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// createInvitations makes cfg.invitations calls, each from a caller to one
// invitee, cfg.workers at a time (at cfg.rate per second when set).
func createInvitations(ctx context.Context, t *target, callers, invitees []string) (list []invitation, took time.Duration, errs int64, firstErr error) {
	cfg := t.cfg
	var (
		mu   sync.Mutex
		next atomic.Int64
		nerr atomic.Int64
		wg   sync.WaitGroup
	)
	list = make([]invitation, 0, cfg.invitations)
	began := time.Now()
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	for range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.invitations) {
					return
				}
				if interval > 0 {
					if d := time.Until(began.Add(time.Duration(i) * interval)); d > 0 {
						time.Sleep(d)
					}
				}
				u := int(i) % len(invitees)
				on := pairRoute(u, len(t.nodes)).invite
				res, _, err := t.nodes[on].client.invite(ctx, callers[u], invitees[u], cfg.callTimeout)
				acked := time.Now()
				mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						nerr.Add(1)
						if firstErr == nil {
							firstErr = err
						}
					}
				} else {
					list = append(list, invitation{callID: res.CallID, acked: acked, deadline: time.UnixMilli(res.Call.CreateTime).Add(cfg.callTimeout), node: on})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return list, time.Since(began), nerr.Load(), firstErr
}
