package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"callsig/calls"
	"callsig/db/storetest"
)

// BenchmarkUpdate measures durable transactions per second (synchronous=FULL)
// at 1, 16 and 64 concurrent requests, each creating a small call with one
// event, the size of a typical invitation, with the WAL fsynced by the
// pipelined syncer (the default) and inside each COMMIT (inline, SQLite's
// own FULL). Run with:
//
//	go test -run '^$' -bench Update -benchtime 3s ./db/sqlite/
func BenchmarkUpdate(b *testing.B) {
	for _, mode := range []struct {
		name   string
		inline bool
	}{{"pipelined", false}, {"inline", true}} {
		for _, conc := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("sync=%s/concurrent=%d", mode.name, conc), func(b *testing.B) {
				benchUpdate(b, Options{InlineSync: mode.inline}, conc)
			})
		}
	}
}

func benchUpdate(b *testing.B, opts Options, conc int) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var n atomic.Int64
	before := s.commits.Load()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				ch := storetest.NewCall(fmt.Sprintf("c%d", i), "alice", 1000, "bob")
				if err := s.Update(ctx, func(tx calls.Tx) error { return tx.Save(ctx, ch) }); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	if commits := s.commits.Load() - before; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "tx/commit")
	}
}
