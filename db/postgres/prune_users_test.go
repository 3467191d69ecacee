package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"callsig/db/storetest"
)

// eventUsers counts event_users rows.
func eventUsers(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.QueryRowContext(context.Background(), `SELECT count(*) FROM event_users`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Every user ever sent an event had an event_users row for good: a caller
// inviting nine made-up user ids a request left nine rows that outlived
// every retention. Pruning the events takes the rows of users with none
// left, more than a page of them, but not a row a writer holds (its user
// may be getting an event right now) nor one whose user has events kept.
func TestPruningEventsDeletesTheRowsOfUsersWithNoneLeft(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	s.usersSweepEvery = time.Nanosecond // every pruning walks it (an hour apart otherwise)
	for i := range 250 {
		invitees := make([]string, 9)
		for j := range invitees {
			invitees[j] = fmt.Sprintf("made-up-%d-%d", i, j)
		}
		storetest.Save(t, s, storetest.NewCall(fmt.Sprintf("c%d", i), "mallory", 1000, invitees...))
	}
	kept := storetest.NewCall("c-kept", "alice", 50_000, "bob")
	storetest.Save(t, s, kept)
	if n := eventUsers(t, s); n < 250*9+1 {
		t.Fatalf("%d event_users rows before pruning, want at least %d", n, 250*9+1)
	}

	held, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	if _, err := held.ExecContext(ctx, `SELECT 1 FROM event_users WHERE user_id = 'made-up-7-3' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneEvents(ctx, 10_000); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := s.db.SelectContext(ctx, &left, `SELECT user_id FROM event_users ORDER BY user_id`); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != "[bob made-up-7-3]" {
		t.Fatalf("event_users after pruning: %d rows %v…, want bob's (an event kept) and the held one", len(left), left[:min(len(left), 5)])
	}
	if err := held.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PruneEvents(ctx, 10_000); err != nil {
		t.Fatal(err)
	}
	if n := eventUsers(t, s); n != 1 {
		t.Fatalf("%d event_users rows after the next pruning, want bob's only", n)
	}
	// A user whose row went gets the next id of the one sequence.
	again := storetest.NewCall("c-again", "mallory", 60_000, "made-up-0-0")
	storetest.Save(t, s, again)
	if again.Events[0].ID <= kept.Events[0].ID {
		t.Fatalf("id after the row was pruned = %d, want above %d", again.Events[0].ID, kept.Events[0].ID)
	}
	if got, err := s.NewestEventIDs(ctx, []string{"made-up-0-0"}); err != nil || got["made-up-0-0"] != again.Events[0].ID {
		t.Fatalf("NewestEventIDs after the row came back = %v (%v)", got, err)
	}
}
