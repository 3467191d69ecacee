package handlers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/internal/prom"
)

// httpMetrics are the RED metrics of the HTTP API. Labels use the route
// pattern, never the raw path, so their cardinality stays bounded.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "callsig_http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status.",
	}, []string{"route", "method", "status"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "callsig_http_request_duration_seconds",
		Help:    "Time to answer HTTP requests (event streams excluded), by route pattern and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method"})
	var err error
	if requests, err = prom.Register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = prom.Register(reg, duration); err != nil {
		return nil, err
	}
	return &httpMetrics{requests: requests, duration: duration}, nil
}

// middleware counts every request; it times all but the event stream,
// whose duration is a connection's lifetime, not a latency.
func (m *httpMetrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := recorderFor(w)
		next.ServeHTTP(rec, r)
		route, method := routePattern(r), methodLabel(r.Method)
		m.requests.WithLabelValues(route, method, strconv.Itoa(rec.Status())).Inc()
		if route != eventsRoute {
			m.duration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}
	})
}

// methodLabel keeps arbitrary client-chosen methods out of the label set.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}
