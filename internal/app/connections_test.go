package app

import (
	"log/slog"
	"testing"
)

// The cap stays below the open-file limit with headroom for the database,
// webhooks and the health reserve, whatever is configured.
func TestMaxConnectionsBelowTheFileLimit(t *testing.T) {
	limit, err := openFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	limit = min(limit, 1<<20)
	log := slog.New(slog.DiscardHandler)
	derived := maxConnections(0, log)
	if derived < 1 || derived+connReserve+fdHeadroom(limit) > limit && derived > limit/2 {
		t.Fatalf("derived cap %d for an open-file limit of %d", derived, limit)
	}
	if got := maxConnections(5, log); got != 5 {
		t.Fatalf("configured 5: cap %d", got)
	}
	if got := maxConnections(limit*2, log); got != derived {
		t.Fatalf("configured above the limit: cap %d, want it lowered to %d", got, derived)
	}
}

func TestPerAddressCap(t *testing.T) {
	for _, tc := range []struct {
		configured, maxConns, want int
	}{
		{0, 58_000, 3_625}, // a sixteenth
		{0, 900, 256},      // at least 256
		{0, 200, 0},        // 256 is the whole cap: no cap of its own
		{50, 900, 50},      // as configured
		{900, 900, 0},      // the whole cap: none
		{5_000, 900, 0},    // more than the cap: none
		{1, 1_000_000, 1},  // as configured, however small
	} {
		if got := perAddressCap(tc.configured, tc.maxConns); got != tc.want {
			t.Errorf("perAddressCap(%d, %d) = %d, want %d", tc.configured, tc.maxConns, got, tc.want)
		}
	}
}
