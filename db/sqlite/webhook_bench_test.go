package sqlite

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"callsig/internal/wait"
	"callsig/webhooks"
)

// BenchmarkWebhookDrain measures how fast one endpoint's backlog drains:
// b.N pending deliveries to one endpoint, sent by the real dispatcher over
// loopback HTTP to a receiver that answers 204 after a delay (none, or
// 20 ms: a receiver one Internet round trip away), each outcome recorded
// durably in this store. share is the attempts in flight to the endpoint
// at most (DispatcherOptions.Share): a single all-events endpoint's rate
// is at most share over how long one attempt takes, claim, send and
// recorded outcome. Run with:
//
//	go test -run '^$' -bench WebhookDrain -benchtime 2000x ./db/sqlite/
func BenchmarkWebhookDrain(b *testing.B) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond} {
		for _, share := range []int{4, 16, 32} {
			b.Run(fmt.Sprintf("receiver=%s/share=%d", delay, share), func(b *testing.B) { benchWebhookDrain(b, delay, share) })
		}
	}
}

func benchWebhookDrain(b *testing.B, delay time.Duration, share int) {
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()

	s := openTest(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now().UnixMilli()
	err := s.write(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.Exec(`INSERT INTO webhook_endpoints (id, url, secret, created_at) VALUES ('wh_bench', ?, ?, ?)`,
			rcv.URL, webhooks.NewSecret(), now); err != nil {
			return err
		}
		if _, err := tx.Exec(`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
			INSERT INTO webhook_messages (id, msg_id, type, call_id, payload, created_at)
			SELECT i, 'msg_bench' || i, 'call.created', 'c' || i, '{"type":"call.created","timestamp":"2026-12-05T00:00:00Z","data":{}}', ? FROM n`,
			b.N, now); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO webhook_deliveries (message_id, endpoint_id, next_attempt_at, created_at)
			SELECT id, 'wh_bench', ?, ? FROM webhook_messages`, now, now)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	d, err := webhooks.NewDispatcher(s, webhooks.DispatcherOptions{
		Client: webhooks.NewClient(webhooks.ClientOptions{AllowPrivate: true}), Share: share,
	})
	if err != nil {
		b.Fatal(err)
	}
	commits, cpu := s.commits.Load(), processCPU(b)
	b.ResetTimer()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// The receiver's count first: counting the outbox every 2 ms would
	// cost the store a share of what is measured.
	wait.For(b, 10*time.Minute, "every delivery to reach the receiver", func() bool { return got.Load() >= int64(b.N) })
	wait.For(b, time.Minute, "every delivery to be recorded", func() bool {
		var left int
		err := s.rdb.Get(&left, `SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'`)
		return err == nil && left == 0
	})
	b.StopTimer()
	commits, cpu = s.commits.Load()-commits, processCPU(b)-cpu
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if n := count(b, s, "webhook_deliveries WHERE status = 'delivered'"); n != b.N {
		b.Fatalf("%d of %d deliveries delivered", n, b.N)
	}
	if n := got.Load(); n < int64(b.N) {
		b.Fatalf("the receiver got %d requests for %d deliveries", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "deliveries/commit")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/delivery")
}
