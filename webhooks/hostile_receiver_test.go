package webhooks_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"callsig/calls"
	"callsig/db/postgres"
	"callsig/internal/fakeclock"
	"callsig/internal/pgtest"
	"callsig/internal/wait"
	"callsig/webhooks"
)

// rawReceiver accepts connections on 127.0.0.1, reads each request and
// writes answer verbatim, then closes.
func rawReceiver(t *testing.T, answer []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				c.Write(answer)
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook"
}

// A receiver's answer is read only so far, whatever it sends, and what is
// kept of it is short: an answer whose status or header line is malformed
// had the whole line, quoted by the transport, stored as lastError (2 MiB
// sent became an 8 MB lastError, written on every attempt and logged).
// Lines under the 64 KiB head limit reach the error text; longer ones are
// refused by the limit.
func TestMalformedAnswerIsKeptShort(t *testing.T) {
	for _, tc := range []struct {
		name, answer string
	}{
		{"status line of 2 MiB", "HTTP/1.1 " + strings.Repeat("\x01", 2<<20) + "\r\n\r\n"},
		{"status line of 60 KiB", "HTTP/1.1 " + strings.Repeat("\x01", 60<<10) + "\r\n\r\n"},
		{"header line of 1 MiB", "HTTP/1.1 500 Internal Server Error\r\n" + strings.Repeat("\x01", 1<<20) + "\r\n\r\n"},
		{"header line of 60 KiB", "HTTP/1.1 500 Internal Server Error\r\n" + strings.Repeat("\x01", 60<<10) + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			url := rawReceiver(t, []byte(tc.answer))
			e := r.endpoint(url)
			r.dispatcher(webhooks.DispatcherOptions{})
			r.call()
			d := r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
			if len(d.LastError) == 0 || len(d.LastError) > 400 || strings.ContainsRune(d.LastError, 1) {
				t.Fatalf("receiver sent %d bytes; lastError is %d bytes (%.80q…), want a short, clean error", len(tc.answer), len(d.LastError), d.LastError)
			}
		})
	}
}

// certFor is a self-signed certificate whose only SAN dNSName is name.
func certFor(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hostile"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: names, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// postgresRig is newRig on a fresh PostgreSQL database.
func postgresRig(t *testing.T) (*postgres.Store, *fakeclock.Clock, *calls.Service, *webhooks.Registry) {
	st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := fakeclock.New(epoch)
	svc := calls.NewService(calls.Options{Store: st, Clock: clock})
	reg := webhooks.NewRegistry(st, webhooks.RegistryOptions{Clock: clock, AllowPrivate: true})
	return st, clock, svc, reg
}

// An https receiver presenting a (bad) certificate whose SAN holds a NUL
// made the attempt's error text carry that NUL raw (x509.HostnameError
// lists the names unquoted). PostgreSQL refused it, so the outcome was
// never recorded: the delivery stayed leased with attempts 0, was sent
// again when the lease ended, and so on. Now the error is cleaned.
func TestCertificateNameWithNULIsRecordedOnPostgres(t *testing.T) {
	st, clock, svc, reg := postgresRig(t)
	var handshakes atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{certFor(t, "evil\x00name.example")},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			handshakes.Add(1)
			return nil, nil
		},
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/hook"
	e, err := reg.Create(context.Background(), webhooks.CreateInput{URL: url, EventTypes: []calls.HookType{calls.HookCallCreated}})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logMu sync.Mutex
	d, err := webhooks.NewDispatcher(st, webhooks.DispatcherOptions{Clock: clock,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelError})),
		Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := svc.Invite(context.Background(), calls.Actor{UserID: "alice", Device: "d"}, calls.InviteInput{Invitees: []string{"bob"}}); err != nil {
		t.Fatal(err)
	}
	d.Wake()
	var l []webhooks.Delivery
	ok := false
	for round := 1; round <= 3 && !ok; round++ {
		wait.Until(5*time.Second, func() bool { return handshakes.Load() >= int32(round) })
		ok = wait.Until(2*time.Second, func() bool {
			l, _ = st.WebhookDeliveries(context.Background(), e.ID, webhooks.DeliveryQuery{})
			return len(l) == 1 && l[0].Attempts >= 1
		})
		if !ok { // the lease runs out and the delivery is sent again
			clock.Advance(webhooks.DefaultLease + time.Second)
			d.Wake()
		}
	}
	logMu.Lock()
	t.Logf("handshakes %d, deliveries %+v\nerror log: %q", handshakes.Load(), l, logs.String())
	logMu.Unlock()
	if !ok {
		t.Fatalf("after %d TLS handshake(s) the attempt's outcome was never recorded: %+v", handshakes.Load(), l)
	}
}

// The breakers (and their metric series) of endpoints that failed and were
// then deleted are forgotten: creating, failing and deleting endpoints in
// a loop used to grow them without bound.
func TestBreakersOfDeletedEndpointsAreForgotten(t *testing.T) {
	r := newRig(t)
	srv, _ := countingServer(t, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, AllowPrivate: true})
	prom := prometheus.NewRegistry()
	d, _ := r.dispatcher(webhooks.DispatcherOptions{Registry: prom, Breaker: webhooks.BreakerOptions{Failures: 2}, Jitter: webhooks.NoJitter})
	const n = 40
	for i := range n {
		e := r.endpoint(srv.URL)
		r.call()
		want := 1
		if i%2 == 1 { // every other one fails twice: its breaker opens
			r.waitDelivery(e.ID, attempts(1, webhooks.DeliveryPending))
			r.clock.Advance(5 * time.Second)
			want = 2
		}
		r.waitDelivery(e.ID, attempts(want, webhooks.DeliveryPending))
		if err := reg.Delete(context.Background(), e.ID); err != nil {
			t.Fatal(err)
		}
	}
	r.clock.Advance(time.Hour) // cool-downs over, deliveries failed as deleted
	d.Wake()
	var breakers, series int
	ok := wait.Until(5*time.Second, func() bool {
		d.Wake()
		breakers, series = d.Breakers(), 0
		mfs, _ := prom.Gather()
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "callsig_webhook_breaker") {
				series += len(mf.GetMetric())
			}
		}
		return breakers == 0 && series == 0
	})
	if !ok {
		t.Fatalf("%d deleted endpoints left %d breakers and %d metric series behind", n, breakers, series)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// An answer's head is bounded like its body: 8 MB of headers used to be
// buffered whole (net/http's default limit is 10 MB) and the answer
// counted as delivered. Now the attempt fails on them.
func TestHugeResponseHeadersAreRefused(t *testing.T) {
	r := newRig(t)
	big := strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 8000)
	url := rawReceiver(t, []byte("HTTP/1.1 200 OK\r\n"+big+"Content-Length: 0\r\n\r\n"))
	e := r.endpoint(url)
	r.dispatcher(webhooks.DispatcherOptions{})
	r.call()
	d := r.waitDelivery(e.ID, func(d webhooks.Delivery) bool { return d.Attempts == 1 })
	if d.Status == webhooks.DeliveryDelivered || len(d.LastError) > 1000 {
		t.Fatalf("an answer with %d bytes of headers: %s, last error %d bytes; want a failed attempt with a short error", len(big), d.Status, len(d.LastError))
	}
}

// A receiver answering 101 Switching Protocols (with Connection: Upgrade)
// and then saying nothing more made the transport hand the raw connection
// over as the body: the client's timeout no longer ended the attempt,
// which hung (a worker, a share slot, and the dispatcher's shutdown) for
// as long as the receiver kept the connection open (a review).
func TestSwitchingProtocolsAnswerEndsTheAttempt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hold\r\n\r\n"))
				// ...and never another byte, never a close.
			}()
		}
	}()
	r := newRig(t)
	e := r.endpoint("http://" + ln.Addr().String() + "/hook")
	_, stop := r.dispatcher(webhooks.DispatcherOptions{
		Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true, Timeout: time.Second}),
	})
	// Whatever happens, hang up at the end so the test can finish.
	defer func() {
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			t.Errorf("the dispatcher did not stop within 3 s of its context's end: the attempt still hangs")
		}
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		<-stopped
	}()
	r.call()
	// The attempt must end (a failure, recorded) within its 1 s timeout.
	var l []webhooks.Delivery
	ok := wait.Until(5*time.Second, func() bool {
		l, _ = r.store.WebhookDeliveries(context.Background(), e.ID, webhooks.DeliveryQuery{})
		return len(l) == 1 && l[0].Attempts == 1
	})
	if !ok {
		t.Errorf("5 s after the call, with a 1 s attempt timeout, the attempt is still not over: %+v", l)
	}
}
