package sse

import (
	"context"
	"time"
)

// This file holds the delivery of PerUserIDOrder (see IDOrder): wake-ups
// from other nodes and the periodic catch-up that makes up for lost ones.

// perUser reports whether the hub runs in PerUserIDOrder.
func (h *Hub) perUser() bool { return h.o.IDOrder == PerUserIDOrder }

// Wake tells the hub that events for users were committed elsewhere
// (another node of the cluster): their streams here, if any, read the log
// after their position. Users without a stream here cost a map lookup.
// It never blocks on a stream.
func (h *Hub) Wake(users []string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, u := range users {
		if list := h.users[u]; len(list) > 0 {
			h.lag(list)
		}
	}
}

// catchUpLoop runs catchUp every Options.CatchUpEvery until ctx is done.
func (h *Hub) catchUpLoop(ctx context.Context) {
	t := time.NewTicker(h.o.CatchUpEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := h.catchUp(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			h.log.Error("periodic catch-up: read the users' newest event ids; retried every tick", "err", err)
		case err == nil && failing:
			failing = false
			h.log.Info("periodic catch-up reads the event log again")
		}
	}
}

// catchUp wakes the streams whose user's newest event id in the log is
// past their position: events committed (here or on another node) whose
// wake-up never came. It reads the newest ids of the users with a stream
// here, Options.CatchUpBatch users per read, one read at a time, so its
// cost is bounded by the number of local users, not by the traffic. A
// stream woken or reading already is woken again (harmless) but not
// counted as missed.
func (h *Hub) catchUp(ctx context.Context) error {
	h.mu.RLock()
	users := make([]string, 0, len(h.users))
	for u := range h.users {
		users = append(users, u)
	}
	h.mu.RUnlock()
	for len(users) > 0 && ctx.Err() == nil {
		batch := users[:min(len(users), h.o.CatchUpBatch)]
		users = users[len(batch):]
		rctx, cancel := context.WithTimeout(ctx, h.o.ReadTimeout)
		newest, err := h.o.Log.NewestEventIDs(rctx, batch)
		cancel()
		if err != nil {
			return err
		}
		h.mu.RLock()
		for u, id := range newest {
			for _, s := range h.users[u] {
				// The flags before the position: a stream idle with
				// nothing pending and still short of id missed it.
				busy := s.reading.Load() || s.lagging.Load()
				if max(s.position.Load(), s.handed.Load()) >= id {
					continue
				}
				if !busy {
					h.m.missed.Inc()
				}
				s.wake()
			}
		}
		h.mu.RUnlock()
	}
	return nil
}
