package storetest

import (
	"context"
	"slices"
	"testing"

	"callsig/calls"
	"callsig/db"
)

// PresenceFixture are the calls of alice the presence backfill tests of
// both backends write as an older server left them (SQLite's 0007 and
// 0008, PostgreSQL's 0005 and 0006), one for each case
// calls.PresenceMatters tells apart: tracked with bob pending; untracked
// with bob pending; untracked with bob timed out (dormant); tracked with
// bob accepted; armed with bob timed out; ended; tracked with bob timed
// out and dave joined uninvited.
var PresenceFixture = []string{"tracked-pending", "untracked-pending", "dormant", "accepted", "armed", "ended", "joined"}

// CheckPresenceBackfill fails t unless CallerOfflineCalls of alice, on s
// upgraded from the fixture, returns exactly the calls the pure predicate
// picks: those are what presence reads after the upgrade, and a call left
// out would never follow the caller-offline rule.
func CheckPresenceBackfill(t *testing.T, s db.Store) {
	t.Helper()
	ctx := context.Background()
	var got []string
	err := s.Update(ctx, func(tx calls.Tx) error {
		list, err := tx.CallerOfflineCalls(ctx, "alice", 0, 100)
		for _, c := range list {
			got = append(got, c.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, id := range PresenceFixture {
		c, err := s.Call(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if calls.PresenceMatters(c) {
			want = append(want, id)
		}
	}
	if !slices.Equal(want, []string{"tracked-pending", "untracked-pending", "armed", "joined"}) {
		t.Fatalf("the fixture's pure predicate: %v", want)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("CallerOfflineCalls after the upgrade = %v, want %v", got, want)
	}
}
