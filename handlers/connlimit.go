package handlers

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// LimitListener caps the connections the server holds at once, so that no
// client, however many accounts or streams it opens, can take the file
// descriptors the process needs for its database, webhooks and logs.
//
// Up to max connections are served normally. The next reserve connections
// are accepted too, but only to keep the server observable while it is
// full: on them GET /healthz, /readyz and /metrics are answered as usual
// and every other request gets a fast 503 unavailable with Retry-After; each
// is closed after its one answer. Beyond max+reserve a connection is closed
// as soon as it is accepted. Nothing waits in the kernel's backlog for a
// slot: a client either is served or learns at once that it is not, the
// way nginx's limit_conn answers 503 (and health checks of a load balancer
// keep working, as on envoy's separate admin listener).
func LimitListener(ln net.Listener, max, reserve int) net.Listener {
	return &limitListener{Listener: ln, max: int64(max), reserve: int64(reserve)}
}

type limitListener struct {
	net.Listener
	max, reserve int64
	open         atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.open.Add(1)
		if n <= l.max+l.reserve {
			return &limitedConn{Conn: c, l: l, overflow: n > l.max}, nil
		}
		l.open.Add(-1)
		_ = c.Close()
	}
}

// limitedConn holds a slot of its listener until it is closed (by the
// server, or by whoever hijacked it: an event stream, a lingering close).
type limitedConn struct {
	net.Conn
	l        *limitListener
	overflow bool // accepted above max: health and metrics only
	once     sync.Once
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
		if r.Method == http.MethodGet && observability[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, r, newError(codeUnavailable, "the server holds as many connections as it allows; retry later"))
	})
}
