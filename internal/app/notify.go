package app

import "callsig/calls"

// notifiers fans a commit notification out to every delivery path.
type notifiers []calls.Notifier

func (ns notifiers) Committed(events []calls.Event, hooks int) {
	for _, n := range ns {
		n.Committed(events, hooks)
	}
}

// durableFeed is a store that hands over each commit's events itself, as
// soon as they are durable (sqlite.Store.OnDurable): sooner than the
// service can, which learns of a commit only when the request's goroutine
// runs again.
type durableFeed interface {
	OnDurable(f func([]calls.Event))
}
