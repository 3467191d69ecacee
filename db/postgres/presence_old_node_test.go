package postgres

import (
	"context"
	"testing"

	"callsig/calls"
	"callsig/internal/pgtest"
)

// During a rolling upgrade a node of a version before 0005 still inserts
// calls, with the column list of its time: no presence_matters. Such a
// call, its caller tracked and bob pending, is one the caller going
// offline must cancel, whichever node reports it: a newer node reads the
// caller's calls through presence_matters, so the column must not come
// out false. Once ended there, the call is no longer returned.
func TestCallInsertedByANodeBefore0005IsReadForPresence(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{
		// The statements of a node of 2026-12-01 (f231f49).
		`INSERT INTO calls (id, caller, mode, state, timeout, extended_data, create_time,
			end_time, end_reason, not_received_check, caller_tracked, caller_offline_at)
			VALUES ('old-node-call', 'alice', 'general', 'started', 60, '', 1000, 0, '', false, true, 0)`,
		`INSERT INTO call_users (call_seq, user_id, ord, state, inviter, update_time, invite_time, accept_time, timeout_at)
			SELECT c.seq, v.user_id, v.ord, v.state, 'alice', 1000, 1000, v.accept_time, v.timeout_at
			FROM (VALUES ('alice', 0, 'accepted', 1000, 0), ('bob', 1, 'inviting', 0, 61000))
				AS v (user_id, ord, state, accept_time, timeout_at)
			JOIN calls c ON c.id = 'old-node-call'`,
	} {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	offlineCalls := func() []string {
		t.Helper()
		var ids []string
		err := s.Update(ctx, func(tx calls.Tx) error {
			list, err := tx.CallerOfflineCalls(ctx, "alice", 0, 10)
			for _, c := range list {
				ids = append(ids, c.ID)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := offlineCalls(); len(got) != 1 || got[0] != "old-node-call" {
		t.Fatalf("alice's calls presence may change: %q, want the call the older node inserted", got)
	}
	// Ended by the older node, which leaves presence_matters as it was.
	if _, err := s.db.ExecContext(ctx, `UPDATE calls SET state = 'ended', end_time = 2000, end_reason = 'completed'
		WHERE id = 'old-node-call'`); err != nil {
		t.Fatal(err)
	}
	if got := offlineCalls(); len(got) != 0 {
		t.Fatalf("alice's calls presence may change once the call ended: %q, want none", got)
	}
}
