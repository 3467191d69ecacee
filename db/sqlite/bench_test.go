package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"callsig/calls"
	"callsig/db/storetest"
)

// BenchmarkUpdate measures durable transactions per second (synchronous=FULL)
// with many concurrent requests, each creating a small call with one event,
// the size of a typical invitation. Run with:
//
//	go test -run '^$' -bench Update -benchtime 5s ./db/sqlite/
func BenchmarkUpdate(b *testing.B) {
	s := openTest(b)
	ctx := context.Background()
	var n atomic.Int64
	before := s.commits.Load()
	b.SetParallelism(32) // requests in flight per CPU: what group commit batches
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ch := storetest.NewCall(fmt.Sprintf("c%d", n.Add(1)), "alice", 1000, "bob")
			if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	if commits := s.commits.Load() - before; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "tx/commit")
	}
}
