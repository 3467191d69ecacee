package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"callsig/calls"
)

// Glare through the service, many pairs at once on two nodes: each user
// of a pair invites the other at the same instant. calls.Service locks
// both users in one order before its busy check, so no invitation waits
// for a deadlock to be detected or fails with 503: all commit.
func TestGlareInvitesAllCommit(t *testing.T) {
	nodes, _ := openNodes(t, 2)
	a := calls.NewService(calls.Options{Store: nodes[0]})
	b := calls.NewService(calls.Options{Store: nodes[1]})
	ctx := context.Background()
	const pairs = 20
	var (
		start sync.WaitGroup
		done  sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		ids   []string
	)
	start.Add(1)
	invite := func(s *calls.Service, from, to string) {
		defer done.Done()
		start.Wait()
		res, err := s.Invite(ctx, calls.Actor{UserID: from}, calls.InviteInput{Invitees: []string{to}})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s invites %s: %w", from, to, err))
			return
		}
		ids = append(ids, res.CallID)
	}
	for i := range pairs {
		u, v := fmt.Sprintf("u%d", i), fmt.Sprintf("v%d", i)
		done.Add(2)
		go invite(a, u, v)
		go invite(b, v, u)
	}
	start.Done()
	done.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(ids) != 2*pairs {
		t.Fatalf("%d invitations committed, want %d", len(ids), 2*pairs)
	}
	for _, id := range ids {
		if c, err := nodes[0].Call(ctx, id); err != nil || c.State != calls.CallStarted {
			t.Fatalf("call %s: %v", id, err)
		}
	}
}
