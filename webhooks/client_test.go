package webhooks_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"code.dny.dev/ssrf"

	"callsig/calls"
	"callsig/webhooks"
)

// fakeResolver answers lookups from a table, so the tests need no DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := f[host]
	if !ok { // as net.Resolver answers a name that does not exist
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, ip := range ips {
		out = append(out, netip.MustParseAddr(ip))
	}
	return out, nil
}

func TestCheckURL(t *testing.T) {
	dns := fakeResolver{
		"hooks.example.com": {"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"},
		"sneaky.example":    {"93.184.216.34", "10.1.2.3"}, // one private answer is enough to refuse
		"internal.example":  {"192.168.0.7"},
		"v6.example":        {"fe80::1"},
		"metadata.example":  {"169.254.169.254"},
		"mapped.example":    {"::ffff:127.0.0.1"},
	}
	ok := []string{
		"https://hooks.example.com/callsig",
		"http://hooks.example.com:8080/x?y=1",
		"https://93.184.216.34/hook",
		"https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
	}
	refused := []string{
		"ftp://hooks.example.com/",
		"hooks.example.com/hook",
		"//hooks.example.com/hook",
		"http:///hook",
		"mailto:ops@example.com",
		"https://user:pw@hooks.example.com/",
		"https://hooks.example.com/#frag",
		"https://nowhere.example/", // does not resolve
		"http://10.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::1]/",
		"http://127.0.0.1/",
		"http://0.0.0.0/",
		"http://[::]/",
		"http://100.64.0.1/",
		"http://[fc00::1]/",
		"http://[fe80::1%25eth0]/",
		"http://[::ffff:10.0.0.1]/",
		"http://sneaky.example/",
		"http://internal.example/",
		"http://v6.example/",
		"http://metadata.example/",
		"http://mapped.example/",
		"https://hooks.example.com/" + strings.Repeat("a", 2048),
	}
	for _, u := range ok {
		if err := webhooks.CheckURL(context.Background(), u, false, dns); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range refused {
		if err := webhooks.CheckURL(context.Background(), u, false, dns); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	// Allowing private addresses lifts the address checks, not the others.
	if err := webhooks.CheckURL(context.Background(), "http://10.0.0.1/", true, dns); err != nil {
		t.Errorf("private address refused when allowed: %v", err)
	}
	if err := webhooks.CheckURL(context.Background(), "ftp://10.0.0.1/", true, dns); err == nil {
		t.Error("ftp accepted when private addresses are allowed")
	}
}

// A port, when the URL gives one, is 1–65535: url.Parse lets ":99999" and
// ":0" through, and no delivery could ever reach them. An empty port is
// the scheme's default (RFC 3986), which Go's transport dials. Allowing
// private addresses changes nothing here.
func TestCheckURLPort(t *testing.T) {
	dns := fakeResolver{"hooks.example.com": {"93.184.216.34"}}
	tests := []struct {
		url  string
		want string // part of the error, "" for accepted
	}{
		{"http://93.184.216.34/", ""},
		{"http://93.184.216.34:1/", ""},
		{"https://93.184.216.34:443/hook", ""},
		{"http://93.184.216.34:65535/", ""},
		{"http://hooks.example.com:8080/x", ""},
		{"https://[2606:2800:220:1:248:1893:25c8:1946]:8443/", ""},
		{"http://93.184.216.34:99999/", "port must be from 1 to 65535"},
		{"http://93.184.216.34:65536/", "port must be from 1 to 65535"},
		{"http://93.184.216.34:0/", "port must be from 1 to 65535"},
		{"http://93.184.216.34:00/", "port must be from 1 to 65535"},
		{"http://93.184.216.34:99999999999999999999/", "port must be from 1 to 65535"},
		{"http://hooks.example.com:99999/x", "port must be from 1 to 65535"},
		{"https://[2606:2800:220:1:248:1893:25c8:1946]:70000/", "port must be from 1 to 65535"},
		{"http://93.184.216.34:/", ""},
		{"http://hooks.example.com:/x", ""},
		{"https://[2606:2800:220:1:248:1893:25c8:1946]:/", ""},
	}
	for _, tt := range tests {
		for _, allowPrivate := range []bool{false, true} {
			err := webhooks.CheckURL(context.Background(), tt.url, allowPrivate, dns)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s (allowPrivate %v) refused: %v", tt.url, allowPrivate, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("%s (allowPrivate %v): %v, want %q", tt.url, allowPrivate, err, tt.want)
			}
		}
	}
}

// countingServer is a loopback receiver that counts requests.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		// Reading the body to its end is also what lets the server notice a
		// client that hangs up (the request's context is then done).
		_, _ = io.Copy(io.Discard, r.Body)
		if h != nil {
			h(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// The client checks the address it dials, whatever the URL said.
func TestClientRefusesInternalAddressesAtDialTime(t *testing.T) {
	srv, hits := countingServer(t, nil)
	client := webhooks.NewClient(webhooks.ClientOptions{})
	loopbackByName := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	for _, u := range []string{srv.URL, loopbackByName, "http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]:9/"} {
		res, err := client.Post(u, "application/json", strings.NewReader("{}"))
		if err == nil {
			res.Body.Close()
			t.Fatalf("%s: reached, status %d", u, res.StatusCode)
		}
		if !errors.Is(err, ssrf.ErrProhibitedIP) {
			t.Errorf("%s: %v, want a prohibited IP error", u, err)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the loopback server got %d requests", hits.Load())
	}

	allowed := webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})
	res, err := allowed.Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("with private addresses allowed: %v", err)
	}
	res.Body.Close()
}

func TestClientFollowsNoRedirectAndNoProxy(t *testing.T) {
	target, targetHits := countingServer(t, nil)
	bouncer, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	client := webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})
	res, err := client.Post(bouncer.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTemporaryRedirect || targetHits.Load() != 0 {
		t.Fatalf("status %d, target hit %d times", res.StatusCode, targetHits.Load())
	}
	// A proxy would dial for the client, out of reach of the address check.
	if tr, ok := client.Transport.(*http.Transport); !ok || tr.Proxy != nil {
		t.Fatal("the client takes a proxy from the environment")
	}
}

// failingResolver fails every lookup with err.
type failingResolver struct{ err error }

func (f failingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, f.err
}

// A name that does not exist is refused (400 at the API); a lookup that
// gives no answer about the name (a timeout, a failing resolver, the
// request gone) is "not now" (503), which the Idempotency-Key middleware
// does not store: a retry may succeed.
func TestCheckURLTellsAMissingNameFromAFailedLookup(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		unresolved  bool
		unavailable bool
	}{
		{"no such host", &net.DNSError{Err: "no such host", Name: "h.example", IsNotFound: true}, true, false},
		{"resolver timed out", &net.DNSError{Err: "i/o timeout", Name: "h.example", IsTimeout: true}, false, true},
		{"server failure", &net.DNSError{Err: "server misbehaving", Name: "h.example", IsTemporary: true}, false, true},
		{"request ended", context.Canceled, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhooks.CheckURL(context.Background(), "https://h.example/hook", false, failingResolver{tc.err})
			if errors.Is(err, webhooks.ErrUnresolvable) != tc.unresolved || errors.Is(err, calls.ErrUnavailable) != tc.unavailable {
				t.Errorf("CheckURL = %v; want unresolvable %v, unavailable %v", err, tc.unresolved, tc.unavailable)
			}
		})
	}
}

// The client keeps as many idle connections to a host as the dispatcher
// sends it attempts at once: the dispatcher sends in bursts (a claim
// starts every attempt it took at once, once the last ones ended), and
// connections beyond what was kept idle in between were dialed (and for
// https, handshaken) anew for each burst and closed after it.
func TestClientKeepsShareOfConnectionsToAHost(t *testing.T) {
	const share, bursts = webhooks.DefaultShare, 20
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	// The default: what NewClient keeps unless told the share.
	client := webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true})
	for range bursts {
		var wg sync.WaitGroup
		for range share {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := client.Post(srv.URL, "application/json", strings.NewReader("{}"))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}()
		}
		wg.Wait()
	}
	// A request that finds no idle connection dials, and takes one freed
	// meanwhile if that comes first: its dial then ends as one more idle
	// connection. So a few more than the share, not a burst's worth for
	// each burst (with 8 kept per host: hundreds).
	if n := conns.Load(); n > 2*share {
		t.Fatalf("%d connections for %d bursts of %d requests: want at most %d", n, bursts, share, 2*share)
	}
}
