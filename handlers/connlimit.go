package handlers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/sse"
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
//
// One client address holds at most perAddr of the max connections (see
// SetPerAddress): past its share its next connection is closed at accept,
// without a reserve slot, so that one party can neither take the whole cap
// nor keep the reserve, and with it the health checks, full.
type ConnLimit struct {
	max, reserve int64
	overflowWait time.Duration // see overflowRequestWait
	open         atomic.Int64
	refused      atomic.Int64 // closed at accept, past the reserve
	perAddr      addrShares
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

// SetPerAddress caps the connections one client address holds at once at
// n (0: no cap of its own). Loopback and private addresses are exempt:
// they are what a proxy or load balancer in front of the server connects
// from, carrying many clients; a proxy keeping the client's address (or
// none in front) is capped per client. IPv6 addresses count by their /64,
// what one host is usually given. Call it before Listener.
func (l *ConnLimit) SetPerAddress(n int) { l.perAddr.max = n }

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
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "callsig_http_connections_per_address_max",
			Help: "Connections one client address may hold at once (CALLSIG_MAX_CONNECTIONS_PER_ADDRESS; 0: no cap); loopback and private addresses are exempt.",
		}, func() float64 { return float64(l.perAddr.max) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "callsig_http_connections_refused_per_address_total",
			Help: "Connections closed as soon as accepted: their client address held its share of the cap already.",
		}, func() float64 { return float64(l.perAddr.refused.Load()) }),
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
		addr, ok := l.perAddr.take(c.RemoteAddr())
		if !ok {
			_ = c.Close()
			continue
		}
		forgetDeadPeer(c, deadPeerTimeout)
		n := l.open.Add(1)
		if n <= l.max {
			return &limitedConn{Conn: c, l: l, addr: addr}, nil
		}
		// Above the cap: a reserve slot or none, and not the address's.
		l.perAddr.release(addr)
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
	addr     netip.Prefix // the client's share it holds (see addrShares); zero: none
	overflow bool         // accepted above max: health and metrics only
	cutoff   time.Time    // overflow only: reads end by then (see ConnLimit)
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
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.perAddr.release(c.addr)
	})
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

// ConnContext marks the requests of a connection accepted above the cap,
// and gives each its connection, for Answers (http.Server.ConnContext).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	ctx = context.WithValue(ctx, connKey{}, c) // see Answers
	if lc, ok := c.(*limitedConn); ok && lc.overflow {
		return context.WithValue(ctx, overflowKey{}, true)
	}
	return ctx
}

// deadPeerTimeout is how long a connection's sent bytes may stay
// unacknowledged before the kernel closes it (TCP_USER_TIMEOUT). A phone
// that leaves its network sends no FIN or RST: without it, its stream's
// heartbeats just sat in the socket's buffer, the kernel retried for
// many minutes, and the user counted as online all that while (a
// review: a caller gone for 3 min kept its call ringing, no push went out
// and the caller-offline rule never ran). With a heartbeat every 15 s, a
// silent peer's stream now ends within 45 s, its user goes offline and
// the caller's grace begins. A client on a bad network that stays silent
// this long reconnects with Last-Event-ID, losing nothing.
const deadPeerTimeout = 30 * time.Second

// observability are the routes answered on a connection above the cap.
var observability = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// overflowRetry is how long a client refused at the cap waits before it
// reconnects (the event stream's retry: field).
const overflowRetry = 5 * time.Second

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
			// Not a 503, on which EventSource gives up for good: an empty
			// stream asking for a later reconnection from where the
			// client was (see sse.Refuse).
			sse.Refuse(w, r, overflowRetry, "the server holds as many connections as it allows; reconnect later")
		default:
			writeError(w, r, newError(codeUnavailable, "the server holds as many connections as it allows; retry later"))
		}
	})
}

// addrShares counts the connections each client address holds, for the
// per-address cap. Only addresses holding a connection have an entry, so
// it is bounded by the connections open.
type addrShares struct {
	max     int // 0: no cap
	mu      sync.Mutex
	held    map[netip.Prefix]int
	refused atomic.Int64
}

// take counts a connection from remote against its address's share and
// returns the key to release it with (zero: not counted: no cap, an exempt
// or unknown address), or false when the share is full.
func (s *addrShares) take(remote net.Addr) (netip.Prefix, bool) {
	if s.max <= 0 {
		return netip.Prefix{}, true
	}
	key, capped := addrKey(remote)
	if !capped {
		return netip.Prefix{}, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[key] >= s.max {
		s.refused.Add(1)
		return netip.Prefix{}, false
	}
	if s.held == nil {
		s.held = map[netip.Prefix]int{}
	}
	s.held[key]++
	return key, true
}

// release gives back a connection take counted under key.
func (s *addrShares) release(key netip.Prefix) {
	if !key.IsValid() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[key]--; s.held[key] <= 0 {
		delete(s.held, key)
	}
}

// addrKey is the share a remote address counts against: an IPv4 address
// itself, an IPv6 address's /64. Loopback, private and link-local
// addresses, and what is not an IP address, are not capped (capped false).
func addrKey(remote net.Addr) (key netip.Prefix, capped bool) {
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
		return netip.Prefix{}, false
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	key, err = ip.Prefix(bits)
	return key, err == nil
}

// SyscallConn reaches the socket below, for the event stream's reading of
// what its client has acknowledged (sse.unackedBytes).
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) { return rawConn(c.Conn) }

// rawConn is c's syscall.RawConn, when it has one.
func rawConn(c net.Conn) (syscall.RawConn, error) {
	if sc, ok := c.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
