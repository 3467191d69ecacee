package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"callsig/webhooks"
)

// hookReceiver is the all-events webhook endpoint of a run with -webhook:
// an HTTP server in the load generator, given to the spawned servers as
// their configured endpoint (CALLSIG_WEBHOOK_URL). It verifies every
// delivery's signature, counts each webhook-id once, and measures the lag
// from the event (the body's timestamp, the time of the change) to its
// delivery, answering 204 after -webhook-delay (a receiver that far away).
type hookReceiver struct {
	url, secret string
	delay       time.Duration
	srv         *http.Server

	mu   sync.Mutex
	seen map[string]bool

	received, duplicates, bad atomic.Int64
	lag                       samples
}

// maxHookBody bounds what the receiver reads of a delivery.
const maxHookBody = 64 << 10

func newHookReceiver(delay time.Duration) (*hookReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	r := &hookReceiver{url: "http://" + ln.Addr().String() + "/hook", secret: webhooks.NewSecret(), delay: delay, seen: map[string]bool{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// env is what a spawned server needs to send every event here.
func (r *hookReceiver) env() []string {
	return []string{"CALLSIG_WEBHOOK_URL=" + r.url, "CALLSIG_WEBHOOK_SECRET=" + r.secret, "CALLSIG_WEBHOOK_ALLOW_PRIVATE=true"}
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(io.LimitReader(req.Body, maxHookBody))
	if err == nil {
		err = r.take(req.Header, body, at)
	}
	if err != nil {
		r.bad.Add(1)
	}
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	// A bad delivery is answered 204 too: retried, it would only be
	// counted again.
	w.WriteHeader(http.StatusNoContent)
}

// take checks one delivery and records it.
func (r *hookReceiver) take(h http.Header, body []byte, at time.Time) error {
	if err := webhooks.Verify(r.secret, h, body, time.Hour); err != nil {
		return err
	}
	var msg struct {
		Timestamp time.Time `json:"timestamp"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Timestamp.IsZero() {
		return errors.New("no timestamp in the body")
	}
	id := h.Get("webhook-id")
	r.mu.Lock()
	dup := r.seen[id]
	r.seen[id] = true
	r.mu.Unlock()
	if dup {
		r.duplicates.Add(1)
		return nil
	}
	r.received.Add(1)
	r.lag.add(at.Sub(msg.Timestamp))
	return nil
}

func (r *hookReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// queueDepth reads callsig_webhook_queue_depth from the first node: the
// deliveries not yet made, of every node (they share the database).
func queueDepth(ctx context.Context, t *target) (float64, error) {
	status, body, err := t.client.get(ctx, "/metrics")
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d", status)
	}
	v, ok := metricValues(body)["callsig_webhook_queue_depth"]
	if !ok {
		return 0, errors.New("GET /metrics: no callsig_webhook_queue_depth")
	}
	return v, nil
}

// reportHooks waits, once the load is over, until the outbox is empty or
// -webhook-drain passes, and adds what the receiver got.
func (r *hookReceiver) report(ctx context.Context, t *target, tab *table, fig figures) error {
	left, err := queueDepth(ctx, t)
	if err != nil {
		return err
	}
	backlog, began := left, time.Now()
	for left > 0 && time.Since(began) < t.cfg.webhookDrain {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if left, err = queueDepth(ctx, t); err != nil {
			return err
		}
	}
	drain := time.Since(began)
	tab.add("webhooks", "%d received (%d again, %d bad) at one all-events endpoint answering after %s", r.received.Load(), r.duplicates.Load(), r.bad.Load(), t.cfg.webhookDelay)
	tab.add("webhook backlog", "%.0f pending when the load ended, %.0f left after %s", backlog, left, drain.Round(time.Millisecond))
	tab.dist("webhook: event → received", r.lag.summarize())
	fig["webhooks_received"] = r.received.Load()
	fig["webhooks_duplicate"] = r.duplicates.Load()
	fig["webhooks_bad"] = r.bad.Load()
	fig["webhook_delay_ms"] = ms(t.cfg.webhookDelay)
	fig["webhook_backlog_at_end"] = backlog
	fig["webhook_backlog_left"] = left
	fig["webhook_drain_s"] = round2(drain.Seconds())
	r.lag.summarize().put(fig, "webhook_lag")
	return nil
}
