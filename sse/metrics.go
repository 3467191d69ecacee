package sse

import (
	"github.com/prometheus/client_golang/prometheus"

	"callsig/internal/prom"
)

// metrics are the hub's Prometheus series.
type metrics struct {
	open    prometheus.Gauge
	written prometheus.Counter
	lag     prometheus.Histogram
	dropped prometheus.Counter
	pruned  prometheus.Counter
	gaps    prometheus.Counter
	missed  prometheus.Counter
	// storeRetries counts log reads that found the store down.
	storeRetries prometheus.Counter
	// logReads and handedOver say how events reach live streams: read from
	// the log after a wake-up, or handed over from the commit report.
	logReads, handedOver prometheus.Counter
	// late counts commit reports of ids already passed (global id order).
	late prometheus.Counter
	// parked is how many delivery and presence reports wait for the store
	// to answer again (see deliveryAttempts).
	parked prometheus.Gauge
	// replayWaits counts catch-ups paused for their user's share (Charge).
	replayWaits prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callsig_sse_streams_open",
			Help: "Event streams (GET /events) open now.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_events_written_total",
			Help: "Events written to event streams (one per stream an event reached).",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "callsig_sse_delivery_lag_seconds",
			Help:    "Time from an event's commit to its write on a live stream.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_subscribers_dropped_total",
			Help: "Times a stream fell behind its buffer and had to catch up from the event log.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_events_pruned_total",
			Help: "Events deleted from the log after the retention period.",
		}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_gaps_total",
			Help: "Times event ids were never reported as committed and their users' streams caught up from the log.",
		}),
		missed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_catchup_missed_total",
			Help: "Streams the periodic catch-up (per-user id order, cluster mode) found behind the event log with no wake-up pending: a wake-up from another node lost or late.",
		}),
		storeRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_store_retries_total",
			Help: "Log reads by streams that found the store unable to serve (e.g. PostgreSQL out of reach); the stream stays open and reads again a second later.",
		}),
		logReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_log_reads_total",
			Help: "Reads of the event log by streams catching up (after a wake-up, a lost hand-over or a full buffer).",
		}),
		handedOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_events_handed_over_total",
			Help: "Events handed to a live stream from their commit report, without a log read (per-user id order: PostgreSQL, cluster mode).",
		}),
		late: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_events_late_total",
			Help: "Events reported committed after the hub had passed their id (global id order, SQLite): given up at a gap, or reported twice. Streams read them from the log; a count that grows with traffic means commits are reported late or twice.",
		}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "callsig_sse_reports_parked",
			Help: "Delivery and presence reports that failed every quick retry (the store out of reach) and are tried again every second until it answers.",
		}),
		replayWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_sse_replay_waits_total",
			Help: "Times a stream catching up from the event log waited before its next page: its user's replays were over the rate limit's share (one request per 64 KiB).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.open, err = prom.Register(reg, m.open); err != nil {
		return nil, err
	}
	if m.written, err = prom.Register(reg, m.written); err != nil {
		return nil, err
	}
	if m.lag, err = prom.Register(reg, m.lag); err != nil {
		return nil, err
	}
	if m.dropped, err = prom.Register(reg, m.dropped); err != nil {
		return nil, err
	}
	if m.pruned, err = prom.Register(reg, m.pruned); err != nil {
		return nil, err
	}
	if m.gaps, err = prom.Register(reg, m.gaps); err != nil {
		return nil, err
	}
	if m.missed, err = prom.Register(reg, m.missed); err != nil {
		return nil, err
	}
	if m.storeRetries, err = prom.Register(reg, m.storeRetries); err != nil {
		return nil, err
	}
	if m.logReads, err = prom.Register(reg, m.logReads); err != nil {
		return nil, err
	}
	if m.handedOver, err = prom.Register(reg, m.handedOver); err != nil {
		return nil, err
	}
	if m.late, err = prom.Register(reg, m.late); err != nil {
		return nil, err
	}
	if m.parked, err = prom.Register(reg, m.parked); err != nil {
		return nil, err
	}
	if m.replayWaits, err = prom.Register(reg, m.replayWaits); err != nil {
		return nil, err
	}
	return m, nil
}
