package db

import (
	"context"
	"sync"
	"testing"
)

func TestIdempotencyReserveCompleteReplay(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()

	found, _, _, _, _, err := s.Reserve(ctx, "alice POST /calls", "k1", "fp1", 1000, 2000)
	if err != nil || found {
		t.Fatalf("first Reserve: found=%v err=%v", found, err)
	}
	found, fp, status, _, _, err := s.Reserve(ctx, "alice POST /calls", "k1", "fp2", 1500, 2500)
	if err != nil || !found || fp != "fp1" || status != 0 {
		t.Fatalf("Reserve in flight: found=%v fp=%q status=%d err=%v", found, fp, status, err)
	}
	if err := s.Complete(ctx, "alice POST /calls", "k1", 201, "application/json", []byte(`{"a":1}`), 90000); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	found, fp, status, ct, body, err := s.Reserve(ctx, "alice POST /calls", "k1", "fp1", 5000, 6000)
	if err != nil || !found || fp != "fp1" || status != 201 || ct != "application/json" || string(body) != `{"a":1}` {
		t.Fatalf("Reserve completed: found=%v fp=%q status=%d ct=%q body=%q err=%v", found, fp, status, ct, body, err)
	}
	// Another scope does not see the key.
	if found, _, _, _, _, err := s.Reserve(ctx, "bob POST /calls", "k1", "fp1", 5000, 6000); err != nil || found {
		t.Fatalf("other scope: found=%v err=%v", found, err)
	}
	// Completion does not touch a completed record again.
	if err := s.Complete(ctx, "alice POST /calls", "k1", 500, "text/plain", nil, 90000); err != nil {
		t.Fatalf("Complete again: %v", err)
	}
	if _, _, status, _, _, _ := s.Reserve(ctx, "alice POST /calls", "k1", "fp1", 5000, 6000); status != 201 {
		t.Fatalf("status after second Complete = %d, want 201", status)
	}
}

func TestIdempotencyExpiredAndReleased(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()

	if _, _, _, _, _, err := s.Reserve(ctx, "sc", "k", "fp1", 1000, 2000); err != nil {
		t.Fatal(err)
	}
	// The in-flight lease ran out: the key is claimed anew.
	if found, _, _, _, _, err := s.Reserve(ctx, "sc", "k", "fp2", 2000, 3000); err != nil || found {
		t.Fatalf("Reserve after expiry: found=%v err=%v", found, err)
	}
	if err := s.Release(ctx, "sc", "k"); err != nil {
		t.Fatal(err)
	}
	if found, _, _, _, _, err := s.Reserve(ctx, "sc", "k", "fp3", 2100, 3000); err != nil || found {
		t.Fatalf("Reserve after Release: found=%v err=%v", found, err)
	}
	if err := s.Complete(ctx, "sc", "k", 200, "application/json", []byte("{}"), 9000); err != nil {
		t.Fatal(err)
	}
	// Release leaves completed records alone.
	if err := s.Release(ctx, "sc", "k"); err != nil {
		t.Fatal(err)
	}
	if found, _, _, _, _, _ := s.Reserve(ctx, "sc", "k", "fp3", 2200, 3000); !found {
		t.Fatal("Release deleted a completed record")
	}
}

func TestIdempotencyConcurrentReserveClaimsOnce(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	claimed := 0
	for range 20 {
		wg.Go(func() {
			found, _, _, _, _, err := s.Reserve(ctx, "sc", "k", "fp", 1000, 5000)
			if err != nil {
				t.Error(err)
				return
			}
			if !found {
				mu.Lock()
				claimed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if claimed != 1 {
		t.Fatalf("%d requests claimed the key, want 1", claimed)
	}
}

func TestPruneIdempotency(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	for i, exp := range []int64{100, 200, 300} {
		if _, _, _, _, _, err := s.Reserve(ctx, "sc", string(rune('a'+i)), "fp", 0, exp); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneIdempotency(ctx, 200)
	if err != nil || n != 2 {
		t.Fatalf("PruneIdempotency = %d, %v; want 2", n, err)
	}
	if got := count(t, s, "idempotency_keys"); got != 1 {
		t.Fatalf("%d records left, want 1", got)
	}
}
