package handlers

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimit caps the connections the server holds at once, so that no
// client, however many accounts or streams it opens, can take the file
// descriptors the process needs for its database, webhooks and logs.
//
// Up to max connections are served normally. The next reserve connections
// are accepted too, but only to keep the server observable while it is
// full: on them GET (or HEAD) /healthz, /readyz and /metrics are answered as usual
// and every other request gets a fast 503 unavailable with Retry-After (an
// event stream: an empty stream, see refuseOverflow); each is closed after
// its one answer. Beyond max+reserve a connection is closed as soon as it
// is accepted. Nothing waits in the kernel's backlog for a slot: a client
// either is served or learns at once that it is not, the way nginx's
// limit_conn answers 503, and a load balancer's health checks keep working
// as on envoy's separate admin listener.
//
// A reserve connection must send its request within overflowRequestWait of
// being accepted, or it is closed: a health check or a scrape sends at
// once, and a client that connects and stays silent would otherwise hold a
// reserve slot for the whole ReadHeaderTimeout, so that a single client
// could fill the reserve and make the health checks fail.
type ConnLimit struct {
	max, reserve int64
	overflowWait time.Duration // see overflowRequestWait
	open         atomic.Int64
	refused      atomic.Int64 // closed at accept, past the reserve
}

// overflowRequestWait is how long after accept a connection in the reserve
// may take to deliver its request (headers and body): long enough for any
// health checker on a loaded network, short enough that silent
// connections cannot keep the reserve full.
const overflowRequestWait = 2 * time.Second

// NewConnLimit returns a cap of max connections plus reserve for
// observability.
func NewConnLimit(max, reserve int) *ConnLimit {
	return &ConnLimit{max: int64(max), reserve: int64(reserve), overflowWait: overflowRequestWait}
}

// Listener applies the cap to the connections accepted from ln.
func (l *ConnLimit) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l}
}

// Register exports the cap, the connections open and those refused.
func (l *ConnLimit) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "callsig_http_connections_open",
			Help: "Client connections open (event streams included).",
		}, func() float64 { return float64(l.open.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "callsig_http_connections_max",
			Help: "Connections served normally at once (CALLSIG_MAX_CONNECTIONS); beyond it only health and metrics are answered.",
		}, func() float64 { return float64(l.max) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "callsig_http_connections_refused_total",
			Help: "Connections closed as soon as accepted: the cap and its reserve were full.",
		}, func() float64 { return float64(l.refused.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("handlers: connection metrics: %w", err)
		}
	}
	return nil
}

type limitListener struct {
	net.Listener
	l *ConnLimit
}

func (ll *limitListener) Accept() (net.Conn, error) {
	l := ll.l
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.open.Add(1)
		if n <= l.max {
			return &limitedConn{Conn: c, l: l}, nil
		}
		if n <= l.max+l.reserve {
			lc := &limitedConn{Conn: c, l: l, overflow: true, cutoff: time.Now().Add(l.overflowWait)}
			// net/http sets its own deadline only once it starts reading;
			// this one covers the time until then.
			_ = c.SetReadDeadline(lc.cutoff)
			return lc, nil
		}
		l.open.Add(-1)
		l.refused.Add(1)
		_ = c.Close()
	}
}

// limitedConn holds a slot of its listener until it is closed (by the
// server, or by whoever hijacked it: an event stream, a lingering close).
type limitedConn struct {
	net.Conn
	l        *ConnLimit
	overflow bool      // accepted above max: health and metrics only
	cutoff   time.Time // overflow only: reads end by then (see ConnLimit)
	once     sync.Once
}

// SetReadDeadline clamps every read deadline of an overflow connection to
// its cutoff: net/http sets ReadHeaderTimeout when it starts reading, and
// no deadline at all once the headers are in, which would each give a
// silent client a reserve slot for longer.
func (c *limitedConn) SetReadDeadline(t time.Time) error {
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// SetDeadline clamps the read half as SetReadDeadline does.
func (c *limitedConn) SetDeadline(t time.Time) error {
	if c.cutoff.IsZero() {
		return c.Conn.SetDeadline(t)
	}
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *limitedConn) clamp(t time.Time) time.Time {
	if !c.cutoff.IsZero() && (t.IsZero() || t.After(c.cutoff)) {
		return c.cutoff
	}
	return t
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// CloseWrite half-closes a TCP connection (net/http and lingeringClose use
// it to end the answer without resetting the connection).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type overflowKey struct{}

// ConnContext marks the requests of a connection accepted above the cap
// (http.Server.ConnContext).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitedConn); ok && lc.overflow {
		return context.WithValue(ctx, overflowKey{}, true)
	}
	return ctx
}

// observability are the routes answered on a connection above the cap.
var observability = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// overflowStream is the whole body of an event stream refused at the cap.
const overflowStream = "retry: 5000\n: the server holds as many connections as it allows; reconnect later\n\n"

// refuseOverflow answers the requests of a connection above the cap (see
// LimitListener): health and metrics as usual, anything else 503, and the
// connection closes after the answer, freeing its slot.
func refuseOverflow(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if over, _ := r.Context().Value(overflowKey{}).(bool); !over {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		switch {
		case (r.Method == http.MethodGet || r.Method == http.MethodHead) && observability[r.URL.Path]:
			next.ServeHTTP(w, r)
		case r.Method == http.MethodGet && r.URL.Path == eventsRoute:
			// EventSource gives up for good on any status but 200, and
			// reconnects after a stream that ends: an empty stream that
			// asks for a later reconnection, keeping the client's
			// Last-Event-ID (no id: line), as a shutdown does.
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, overflowStream)
		default:
			writeError(w, r, newError(codeUnavailable, "the server holds as many connections as it allows; retry later"))
		}
	})
}
