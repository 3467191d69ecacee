package testkit

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// balancer spreads requests over a cluster's nodes in turn, as a load
// balancer would, so a story's consecutive requests and streams land on
// different nodes: the invitation on one, the invitee's stream on
// another, the answer on a third. A stopped node is skipped.
type balancer struct {
	url    string
	next   atomic.Uint64
	nodes  []*httputil.ReverseProxy
	mu     sync.Mutex
	down   []bool
	server *httptest.Server
}

func startBalancer(t testing.TB, urls []string) *balancer {
	b := &balancer{down: make([]bool, len(urls))}
	for _, u := range urls {
		target, err := url.Parse(u)
		if err != nil {
			t.Fatalf("node url %s: %v", u, err)
		}
		p := httputil.NewSingleHostReverseProxy(target)
		p.FlushInterval = -1 // event streams flush at once
		p.ErrorLog = nil
		b.nodes = append(b.nodes, p)
	}
	b.server = httptest.NewServer(http.HandlerFunc(b.serve))
	b.url = b.server.URL
	t.Cleanup(b.server.Close)
	return b
}

func (b *balancer) serve(w http.ResponseWriter, r *http.Request) {
	b.pick().ServeHTTP(w, r)
}

// pick returns the next node that is up (any node if none is).
func (b *balancer) pick() *httputil.ReverseProxy {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.nodes)
	start := int(b.next.Add(1) % uint64(n))
	for i := range n {
		j := (start + i) % n
		if !b.down[j] {
			return b.nodes[j]
		}
	}
	return b.nodes[start]
}

func (b *balancer) setDown(i int, down bool) {
	b.mu.Lock()
	b.down[i] = down
	b.mu.Unlock()
}
