package app

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/db"
)

// callsCollector exports callsig_calls{state}: calls by state, read from
// the database at scrape time so it is right across restarts.
type callsCollector struct {
	store db.Store
	desc  *prometheus.Desc
}

func newCallsCollector(store db.Store) *callsCollector {
	return &callsCollector{store: store, desc: prometheus.NewDesc("callsig_calls", "Calls by state (started, ended).", []string{"state"}, nil)}
}

func (c *callsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *callsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	started, ended, err := c.store.CallCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(started), "started")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(ended), "ended")
}

// newNodeInfo exports callsig_node_info{node, backend} 1: which node a
// scrape came from, joinable onto every other series by instance (the
// usual Prometheus "info" metric, rather than a node label on each series).
func newNodeInfo(node, backend string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "callsig_node_info",
		Help:        "This node: its id (CALLSIG_NODE_ID) and storage backend.",
		ConstLabels: prometheus.Labels{"node": node, "backend": backend},
	})
	g.Set(1)
	return g
}
