package e2e

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"callsig/calls"
	"callsig/internal/testkit"
)

// BenchmarkInviteAccept measures one general call (invite, then accept)
// through the whole stack: HTTP, JWT, spec validation, the service and a
// durable SQLite commit (synchronous=FULL) per request.
//
//	go test ./e2e -run '^$' -bench InviteAccept -benchtime 5s
func BenchmarkInviteAccept(b *testing.B) {
	s := testkit.Start(b)
	var n atomic.Int64
	b.SetParallelism(8) // 16 concurrent clients on 2 cores: enough to fill commit groups
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := n.Add(1)
		caller, callee := s.Client(fmt.Sprintf("caller%d", i)), s.Client(fmt.Sprintf("callee%d", i))
		caller.SkipSpec, callee.SkipSpec = true, true // measure the server, not the test's validator
		for pb.Next() {
			var res calls.InviteResult
			caller.Post("/calls", map[string]any{"invitees": []string{callee.User}}).Want(http.StatusCreated).JSON(&res)
			callee.Action(res.CallID, "accept", nil).Want(http.StatusOK)
		}
	})
}
