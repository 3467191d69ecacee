package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FreeAddr returns a loopback address free now, for a process a test
// starts itself (a server binary, nats-server) and may start again on the
// same address. The port is below Linux's ephemeral range (32768-60999):
// one the kernel hands out for port 0 was free only until the next
// listener or outgoing connection of the tests beside it took it, in the
// moment before the process bound it, and the test then talked to another
// test's server (a 401 for a token of another secret, at -parallel 5).
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken
		}
		ln.Close()
		return addr
	}
	t.Fatal("testkit: no free port in 20000-31999")
	return ""
}
