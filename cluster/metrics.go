package cluster

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"callsig/internal/prom"
)

// metrics are the fan-out's Prometheus series.
type metrics struct {
	published prometheus.Counter
	received  prometheus.Counter
	failed    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, nc func() *nats.Conn) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_cluster_wakeups_published_total",
			Help: "Wake-up messages published to NATS (each carries the events, or names the users, of one or more commits).",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_cluster_wakeups_received_total",
			Help: "Wake-up messages received from other nodes.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "callsig_cluster_wakeups_failed_total",
			Help: "Wake-up messages not published (NATS unreachable, or the queue full); the periodic catch-up delivers their events.",
		}),
	}
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "callsig_nats_connected",
		Help: "1 while the node is connected to NATS, else 0 (cross-node delivery then waits for the periodic catch-up).",
	}, func() float64 {
		if c := nc(); c != nil && c.IsConnected() {
			return 1
		}
		return 0
	})
	if reg == nil {
		return m, nil
	}
	var err error
	if m.published, err = prom.Register(reg, m.published); err != nil {
		return nil, err
	}
	if m.received, err = prom.Register(reg, m.received); err != nil {
		return nil, err
	}
	if m.failed, err = prom.Register(reg, m.failed); err != nil {
		return nil, err
	}
	// A gauge of this connection: one already registered (an app rebuilt
	// on one registry) reads the old connection, so it is replaced.
	reg.Unregister(connected)
	if err := reg.Register(connected); err != nil {
		return nil, err
	}
	return m, nil
}
