package webhooks

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/internal/prom"
)

// Outcomes of one attempt, the label of callsig_webhook_deliveries_total.
const (
	OutcomeDelivered = "delivered" // 2xx
	OutcomeRetry     = "retry"     // failed; another attempt is scheduled
	OutcomeFailed    = "failed"    // failed; no attempt left
	OutcomeGone      = "gone"      // 410: the endpoint is disabled
)

// metrics of the dispatcher.
type metrics struct {
	attempts     *prometheus.CounterVec
	latency      prometheus.Histogram
	breakerState *prometheus.GaugeVec
	breakerTrips *prometheus.CounterVec
	fenced       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, store Store, clock calls.Clock) (*metrics, error) {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callsig_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by outcome: delivered, retry, failed (no attempt left) or gone (410, endpoint disabled).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "callsig_webhook_attempt_duration_seconds",
			Help:    "Time from sending a webhook to its answer (or error).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15},
		}),
		// Per endpoint: endpoints are few and registered by an admin, so
		// the label's cardinality is bounded by configuration.
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "callsig_webhook_breaker_state",
			Help: "Circuit breaker of a webhook endpoint that failed: 0 closed, 1 open (its deliveries wait), 2 half-open (one probe).",
		}, []string{"webhook"}),
		breakerTrips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "callsig_webhook_breaker_opened_total",
			Help: "Times a webhook endpoint's circuit breaker opened.",
		}, []string{"webhook"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_webhook_results_fenced_total",
			Help: "Webhook attempt outcomes and releases ignored because the attempt no longer held its delivery's lease (it ran out and another attempt took the delivery over).",
		}),
	}
	for _, o := range []string{OutcomeDelivered, OutcomeRetry, OutcomeFailed, OutcomeGone} {
		m.attempts.WithLabelValues(o) // export zeros, so rates work from the start
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.attempts, err = prom.Register(reg, m.attempts); err != nil {
		return nil, err
	}
	if m.latency, err = prom.Register(reg, m.latency); err != nil {
		return nil, err
	}
	if m.breakerState, err = prom.Register(reg, m.breakerState); err != nil {
		return nil, err
	}
	if m.breakerTrips, err = prom.Register(reg, m.breakerTrips); err != nil {
		return nil, err
	}
	if m.fenced, err = prom.Register(reg, m.fenced); err != nil {
		return nil, err
	}
	if _, err = prom.Register(reg, &queueCollector{store: store, clock: clock}); err != nil {
		return nil, err
	}
	return m, nil
}

var (
	queueDepthDesc = prometheus.NewDesc("callsig_webhook_queue_depth",
		"Webhook deliveries pending (due now or waiting for a retry).", nil, nil)
	oldestPendingDesc = prometheus.NewDesc("callsig_webhook_oldest_pending_age_seconds",
		"Age of the oldest pending webhook delivery; 0 when none is pending.", nil, nil)
)

// queueCollector reads the outbox at scrape time, so the gauges are right
// even while the dispatcher sleeps until the next retry.
type queueCollector struct {
	store Store
	clock calls.Clock
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- oldestPendingDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, oldest, err := c.store.WebhookQueueStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
		return
	}
	age := 0.0
	if oldest > 0 {
		age = max(0, float64(c.clock.Now().UnixMilli()-oldest)/1000)
	}
	ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(oldestPendingDesc, prometheus.GaugeValue, age)
}
