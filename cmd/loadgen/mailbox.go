package main

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// What a stream reader reports to the worker waiting for it.
const (
	gotInvitation uint8 = iota + 1 // the invitee's stream: callInvitationReceived
	gotAccepted                    // the caller's stream: the invitee is now accepted
)

type mailKey struct {
	user, callID string
	kind         uint8
}

// mailbox hands the arrival time of an event from the stream that read it
// to the worker that waits for it. The event may arrive before the worker
// knows the callID (before the answer to POST /calls is read), so an
// arrival with no waiter is kept until it is asked for.
type mailbox struct {
	mu      sync.Mutex
	arrived map[mailKey]time.Time
	waiting map[mailKey]chan time.Time
}

func newMailbox() *mailbox {
	return &mailbox{arrived: map[mailKey]time.Time{}, waiting: map[mailKey]chan time.Time{}}
}

func (m *mailbox) put(k mailKey, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.waiting[k]; ok {
		delete(m.waiting, k)
		ch <- at
		return
	}
	m.arrived[k] = at
}

// wait returns when k arrived, or ok=false after timeout.
func (m *mailbox) wait(ctx context.Context, k mailKey, timeout time.Duration) (at time.Time, ok bool) {
	m.mu.Lock()
	if at, ok := m.arrived[k]; ok {
		delete(m.arrived, k)
		m.mu.Unlock()
		return at, true
	}
	ch := make(chan time.Time, 1)
	m.waiting[k] = ch
	m.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-ch:
		return at, true
	case <-t.C:
	case <-ctx.Done():
	}
	m.mu.Lock()
	delete(m.waiting, k)
	m.mu.Unlock()
	select {
	case at := <-ch: // put won the race with the timeout
		return at, true
	default:
		return time.Time{}, false
	}
}

// eventData is the part of an event's data the load looks at.
type eventData struct {
	CallID       string `json:"callID"`
	CallUserList []struct {
		UserID string `json:"userID"`
		State  string `json:"state"`
	} `json:"callUserList"`
}

// cycleEvents routes the events of the cycle load into the mailbox.
func cycleEvents(m *mailbox, bad func(error)) func(*sseStream, *event) {
	return func(s *sseStream, ev *event) {
		switch ev.typ {
		case "callInvitationReceived", "callUserStateChanged":
		default:
			return
		}
		var d eventData
		if err := json.Unmarshal(ev.data, &d); err != nil {
			bad(err)
			return
		}
		if ev.typ == "callInvitationReceived" {
			m.put(mailKey{s.user, d.CallID, gotInvitation}, ev.at)
			return
		}
		// The caller hears of the invitee's acceptance; the invitee's own
		// streams hear of it too, which is not what is timed.
		for _, u := range d.CallUserList {
			if u.UserID != s.user && u.State == "accepted" {
				m.put(mailKey{s.user, d.CallID, gotAccepted}, ev.at)
			}
		}
	}
}
