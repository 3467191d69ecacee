package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"callsig/internal/app"
	"callsig/internal/testkit"
)

// BenchmarkCallsWhileACallerFlaps measures another user's POST /calls
// while a caller with 1,000 started calls opens a stream, holds it 50 ms
// and closes it, every 110 ms (some nine a second, within the rate
// limit): each close and reopening is a presence report that writes
// every one of those calls (see sse's pace). "away" is the same with the
// caller gone. It reports the calls' p50 and p99 and the store writes
// per call made.
//
//	go test ./e2e -run '^$' -bench CallsWhileACallerFlaps -benchtime 400x
func BenchmarkCallsWhileACallerFlaps(b *testing.B) {
	s := testkit.Start(b, testkit.WithConfig(func(c *app.Config) { c.RateLimit = 0 }))
	st := s.Stream("mallory", "", "")
	mallory := s.Client("mallory")
	mallory.SkipSpec = true
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 1000; i += 8 {
				mallory.Invite(map[string]any{"mode": "advanced", "timeout": 600}, fmt.Sprint("ghost", i))
			}
		})
	}
	wg.Wait()
	st.Close()
	for _, flap := range []bool{false, true} {
		name := map[bool]string{false: "away", true: "flapping"}[flap]
		b.Run(name, func(b *testing.B) {
			stop := make(chan struct{})
			var fw sync.WaitGroup
			if flap {
				fw.Go(func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(60 * time.Millisecond):
						}
						if x, err := s.TryStream(testkit.StreamOptions{User: "mallory"}); err == nil {
							time.Sleep(50 * time.Millisecond)
							x.Close()
						}
					}
				})
			}
			carol := s.Client("carol")
			carol.SkipSpec = true
			writes := scrapeMetric(b, s, "callsig_store_writes_total")
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				carol.Post("/calls", map[string]any{"invitees": []string{fmt.Sprint("dave", i)}, "timeout": 600}).Want(http.StatusCreated)
				lat = append(lat, time.Since(start))
				i++
				time.Sleep(20 * time.Millisecond)
			}
			b.StopTimer()
			close(stop)
			fw.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric((scrapeMetric(b, s, "callsig_store_writes_total")-writes)/float64(len(lat)), "writes/call")
		})
	}
}
