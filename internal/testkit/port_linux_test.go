package testkit

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

// A node stopped to be started again keeps its port: a listener of
// another test cannot take it in the gap, a client is refused as by a
// stopped process, and the node comes back on its address.
func TestStoppedNodeHoldsItsPort(t *testing.T) {
	s := Start(t)
	url := s.Nodes()[0]
	addr := strings.TrimPrefix(url, "http://")
	s.StopNode(0)
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("another listener got the stopped node's port %s", addr)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("a connection to the stopped node at %s was accepted", addr)
	}
	s.StartNode(0)
	if got := s.Nodes()[0]; got != url {
		t.Fatalf("the node came back at %s, not %s", got, url)
	}
	res, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatalf("the node back on its port: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %d", res.StatusCode)
	}
	s.StopNode(0) // and Stop, at the test's end, gives the port up
}
