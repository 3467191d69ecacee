package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// natsBinary is Debian's nats-server, installed on every development and
// CI machine of the project (scripts/test installs it when missing).
const natsBinary = "/usr/sbin/nats-server"

// NATSServer is a nats-server process of the test's own, on a free
// loopback port, that the test may stop and start again on the same port:
// the tests of NATS going down must not stop the machine's server, which
// other tests use.
type NATSServer struct {
	URL  string
	t    testing.TB
	port int
	cmd  *exec.Cmd
}

// StartNATS starts a nats-server for t and stops it when t ends.
func StartNATS(t testing.TB) *NATSServer {
	t.Helper()
	if _, err := os.Stat(natsBinary); err != nil {
		t.Fatalf("%s not found (%v): scripts/test installs it", natsBinary, err)
	}
	addr := FreeAddr(t)
	port, err := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	n := &NATSServer{t: t, port: port, URL: "nats://" + addr}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// Start starts the server (again) on its port and waits until it accepts
// connections.
func (n *NATSServer) Start() {
	n.t.Helper()
	if n.cmd != nil {
		return
	}
	cmd := exec.Command(natsBinary, "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-l", filepath.Join(n.t.TempDir(), "nats.log"))
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start nats-server: %v", err)
	}
	n.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server on port %d does not answer: %v", n.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server; its clients see the connection drop.
func (n *NATSServer) Stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}
