package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/internal/redact"
)

// Waker is what the announcements of another node are handed to: the SSE
// hub, which hands an event to a stream it follows on (sse.Hub.Committed)
// and otherwise wakes the user's streams to read the log (Wake).
type Waker interface {
	Wake(users []string)
	Committed(events []calls.Event, n int)
}

// Options configures a Fanout.
type Options struct {
	URL    string // NATS server(s), comma-separated (required)
	NodeID string // this node, named in its messages (required)
	Waker  Waker  // required
	// Subject all nodes of the cluster publish and subscribe wake-ups on
	// (default "callsig.wake").
	Subject    string
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics kept, not exported
	// ReconnectWait is the pause between connection attempts (default
	// 500ms): NATS coming back is noticed about this fast.
	ReconnectWait time.Duration
}

// maxQueue bounds the events waiting to be announced; past it they are
// dropped (and counted): their streams elsewhere catch up within a second.
const maxQueue = 100_000

// drainTimeout bounds the drain at shutdown.
const drainTimeout = 5 * time.Second

// Fanout announces the users of each local commit to the other nodes
// (calls.Notifier) and hands the announcements of the others to the local
// Waker. Build it with New, connect it with Connect, run it with Run.
type Fanout struct {
	o   Options
	log *slog.Logger
	m   *metrics

	mu    sync.Mutex
	nc    *nats.Conn
	queue []calls.Event // events to announce
	kick  chan struct{}
	// failing is set while publishing fails, so the log says it once.
	failing bool
}

var _ calls.Notifier = (*Fanout)(nil)

// New returns a fan-out, not connected yet: Committed only queues until
// Run publishes.
func New(o Options) (*Fanout, error) {
	if o.URL == "" || o.NodeID == "" || o.Waker == nil {
		return nil, errors.New("cluster: Options.URL, NodeID and Waker are required")
	}
	if o.Subject == "" {
		o.Subject = "callsig.wake"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 500 * time.Millisecond
	}
	f := &Fanout{o: o, log: o.Logger, kick: make(chan struct{}, 1)}
	var err error
	if f.m, err = newMetrics(o.Registerer, f.conn); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fanout) conn() *nats.Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nc
}

// Connect starts the connection to NATS and subscribes to the other
// nodes' wake-ups. It does not wait for a server:
// one that is down (or the URL's host unreachable) is retried forever in
// the background, and the node serves meanwhile with the periodic
// catch-up. Only a malformed URL fails.
func (f *Fanout) Connect() error {
	log := f.log
	nc, err := nats.Connect(f.o.URL,
		nats.Name("callsig "+f.o.NodeID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(f.o.ReconnectWait),
		nats.ReconnectBufSize(-1), // publish fails at once while disconnected
		nats.NoEcho(),
		nats.DrainTimeout(drainTimeout),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("NATS connected: cross-node wake-ups on", "url", redact.TokenAttr(c.ConnectedUrlRedacted()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected: cross-node delivery falls back to the periodic catch-up (about 1 s) until it reconnects", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected: cross-node wake-ups on again", "url", redact.TokenAttr(c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error: wake-ups may be lost; the periodic catch-up covers them", "err", err)
		}),
	)
	if err != nil {
		return fmt.Errorf("cluster: connect to NATS: %w", err)
	}
	// Subscribed at once (sent again on every reconnection), so wake-ups
	// reach the hub as soon as the connection is up.
	if _, err := nc.Subscribe(f.o.Subject, f.receive); err != nil {
		nc.Close()
		return fmt.Errorf("cluster: subscribe to %s: %w", f.o.Subject, err)
	}
	if !nc.IsConnected() {
		log.Warn("NATS not reachable at startup: retrying in the background; cross-node delivery uses the periodic catch-up (about 1 s) meanwhile")
	}
	f.mu.Lock()
	f.nc = nc
	f.mu.Unlock()
	return nil
}

// Committed queues a commit's events for the other nodes
// (calls.Notifier). It never blocks on NATS.
func (f *Fanout) Committed(events []calls.Event, _ int) {
	f.mu.Lock()
	n := 0
	for i := range events {
		if events[i].ID <= 0 {
			continue
		}
		if len(f.queue) >= maxQueue {
			n++
			continue
		}
		f.queue = append(f.queue, events[i])
	}
	f.mu.Unlock()
	if n > 0 {
		f.m.failed.Inc()
	}
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Run publishes this node's wake-ups until ctx is done, then drains the connection (what is queued is
// published, the subscription finished) and closes it. Connect first.
func (f *Fanout) Run(ctx context.Context) error {
	nc := f.conn()
	if nc == nil {
		return errors.New("cluster: Run before Connect")
	}
	for {
		select {
		case <-ctx.Done():
			f.publish()
			f.Close()
			return nil
		case <-f.kick:
			f.publish()
		}
	}
}

// Close drains the connection (bounded by drainTimeout) and waits for it
// to close. Safe to call twice, and without Run.
func (f *Fanout) Close() {
	nc := f.conn()
	if nc == nil || nc.IsClosed() {
		return
	}
	if err := nc.Drain(); err != nil {
		nc.Close() // not connected: nothing to drain
		return
	}
	deadline := time.Now().Add(drainTimeout + time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	nc.Close()
}

// publish sends what is queued in as few messages as fit: each event that
// names its predecessor (Event.After) as itself, for the other nodes to
// hand over without reading the log, and the users of the others once
// each, as wake-ups.
func (f *Fanout) publish() {
	f.mu.Lock()
	events := f.queue
	f.queue = nil
	nc := f.nc
	f.mu.Unlock()
	if len(events) == 0 {
		return
	}
	seen := make(map[string]struct{}, len(events))
	lines := make([]string, 0, len(events))
	for i := range events {
		if line, ok := eventLine(&events[i]); ok {
			lines = append(lines, line)
			continue
		}
		if u := events[i].UserID; !seenBefore(seen, u) {
			lines = append(lines, u)
		}
	}
	var failed error
	for _, msg := range encode(f.o.NodeID, lines, nil) {
		if err := nc.Publish(f.o.Subject, msg); err != nil {
			f.m.failed.Inc()
			failed = err
			continue
		}
		f.m.published.Inc()
	}
	switch {
	case failed != nil && !f.failing:
		f.failing = true
		f.log.Warn("publish wake-ups to NATS failed: other nodes deliver these events at their periodic catch-up", "err", failed)
	case failed == nil && f.failing:
		f.failing = false
		f.log.Info("publishing wake-ups to NATS again")
	}
}

// receive hands another node's events and wake-ups to the Waker.
func (f *Fanout) receive(msg *nats.Msg) {
	node, lines := decode(msg.Data)
	if node == f.o.NodeID {
		return // our own, should NoEcho not hold: woken at commit already
	}
	f.m.received.Inc()
	var users []string
	var events []calls.Event
	for _, line := range lines {
		if ev, ok := parseEventLine(line); ok {
			events = append(events, ev)
			continue
		}
		user, _, _ := strings.Cut(line, "\t")
		users = append(users, user)
	}
	if len(events) > 0 {
		f.o.Waker.Committed(events, 0)
	}
	if len(users) > 0 {
		f.o.Waker.Wake(users)
	}
}

// seenBefore reports whether u is in seen, adding it.
func seenBefore(seen map[string]struct{}, u string) bool {
	if _, ok := seen[u]; ok {
		return true
	}
	seen[u] = struct{}{}
	return false
}
