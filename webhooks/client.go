package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"code.dny.dev/ssrf"

	"callsig/calls"
)

// AttemptTimeout bounds one delivery attempt, from dialing to the end of
// the (bounded) response body.
const AttemptTimeout = 15 * time.Second

// MaxResponseBody is how much of a receiver's answer is read: enough for an
// error message in the delivery log, never a receiver-chosen amount.
const MaxResponseBody = 4 << 10

// MaxURLLength is the longest endpoint URL accepted.
const MaxURLLength = 2048

// ClientOptions configures NewClient.
type ClientOptions struct {
	// AllowPrivate lets deliveries reach loopback, private, link-local and
	// other special addresses (CALLSIG_WEBHOOK_ALLOW_PRIVATE; tests).
	AllowPrivate bool
	// Timeout bounds one attempt (default AttemptTimeout).
	Timeout time.Duration
	// IdlePerHost and Idle are how many idle connections are kept to one
	// host and in all (default DefaultShare and DefaultWorkers): as many
	// as the dispatcher's attempts in flight to one endpoint and in all,
	// or each attempt past them dials (and for https, handshakes) anew
	// and closes its connection after.
	IdlePerHost, Idle int
}

// guardian refuses the special-purpose IPv4 ranges of the IANA registry
// (loopback, RFC 1918, link-local and the cloud metadata address in it,
// CGNAT, ...) and every IPv6 address outside global unicast plus the
// special ranges inside it. Any port: receivers listen where they like.
var guardian = ssrf.New(ssrf.WithAnyPort())

// maxResponseHeaderBytes bounds a receiver's answer's status line and
// headers, as its body is bounded (4 KiB read).
const maxResponseHeaderBytes = 64 << 10

// NewClient returns the HTTP client deliveries are sent with. It follows no
// redirect (a 3xx is the answer, and a failure), takes no proxy from the
// environment, and unless opts.AllowPrivate checks the address it is about
// to connect to, after DNS resolution, so neither a hostname resolving to a
// private address nor DNS rebinding reaches the internal network.
func NewClient(opts ClientOptions) *http.Client {
	if opts.Timeout <= 0 {
		opts.Timeout = AttemptTimeout
	}
	if opts.IdlePerHost <= 0 {
		opts.IdlePerHost = DefaultShare
	}
	if opts.Idle <= 0 {
		opts.Idle = DefaultWorkers
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !opts.AllowPrivate {
		// Control runs for every address the dialer tries, with the
		// resolved IP: the only check a rebinding DNS answer cannot dodge.
		dialer.Control = guardian.Safe
	}
	transport := &http.Transport{
		Proxy:                 nil, // never HTTP(S)_PROXY: a proxy would dial for us, unchecked
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          opts.Idle,
		MaxIdleConnsPerHost:   opts.IdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: opts.Timeout,
		ExpectContinueTimeout: time.Second,
		// The answer's head is read whole: without this, up to 10 MB of
		// headers per attempt (Go's default), for a status we read.
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   opts.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ErrUnresolvable is CheckURL's error for a host name that does not resolve.
var ErrUnresolvable = errors.New("host does not resolve")

// Resolver looks up a host's addresses; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// CheckURL validates an endpoint URL at registration: an absolute http or
// https URL with a host, a port (when given) from 1 to 65535 and no
// credentials; unless allowPrivate, its literal IP, or every address its
// host resolves to, must be public. The dial-time check of NewClient still
// applies to every delivery: DNS answers change. The error message is safe
// to show the admin.
func CheckURL(ctx context.Context, raw string, allowPrivate bool, resolver Resolver) error {
	if len(raw) > MaxURLLength {
		return fmt.Errorf("must be at most %d characters", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("must be an absolute http or https URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http or https URL")
	}
	if u.Host == "" || u.Hostname() == "" || u.Opaque != "" {
		return errors.New("must be an absolute http or https URL with a host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials (user:password@)")
	}
	if u.Fragment != "" {
		return errors.New("must not have a fragment")
	}
	// url.Parse checks only that a port is digits: ":99999" and ":0" pass
	// it, and every delivery to them would fail. An empty one ("host:/")
	// is the scheme's default (RFC 3986), which Go's transport dials.
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("port must be from 1 to 65535")
		}
	}
	if allowPrivate {
		return nil
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return errors.New("must not use a zoned IPv6 address")
		}
		if guardian.SafeAddr(ip) != nil {
			return fmt.Errorf("address %s is loopback, private, link-local or otherwise special", ip)
		}
		return nil
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := resolver.LookupNetIP(ctx, "ip", strings.TrimSuffix(host, "."))
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(addrs) == 0, errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Errorf("%w: %s", ErrUnresolvable, host)
	case err != nil:
		// Not an answer about the name: the request ended, the resolver
		// timed out or failed. A 400 would be stored under the request's
		// Idempotency-Key and replayed to every retry: "not now" instead.
		return fmt.Errorf("%w: cannot resolve %s now: %w", calls.ErrUnavailable, host, err)
	}
	for _, ip := range addrs {
		if guardian.SafeAddr(ip.Unmap()) != nil {
			return fmt.Errorf("host %s resolves to %s, which is loopback, private, link-local or otherwise special", host, ip.Unmap())
		}
	}
	return nil
}
