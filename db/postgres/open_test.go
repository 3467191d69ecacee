package postgres

import (
	"context"
	"testing"

	"callsig/internal/pgtest"
)

// Open opens warmConns sessions ahead of the first requests, and no more
// than half the pool holds.
func TestOpenWarmsThePool(t *testing.T) {
	for _, tc := range []struct{ maxConns, want int }{{16, warmConns}, {4, 2}, {1, 1}} {
		s, err := Open(context.Background(), pgtest.NewDatabase(t), Options{MaxConns: tc.maxConns})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		st := s.db.Stats()
		s.Close()
		if st.OpenConnections != tc.want || st.Idle != tc.want {
			t.Errorf("pool of %d after Open: %d open, %d idle; want %d of each", tc.maxConns, st.OpenConnections, st.Idle, tc.want)
		}
	}
}
