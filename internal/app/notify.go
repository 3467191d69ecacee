package app

import "callsig/calls"

// notifiers fans a commit notification out to every delivery path.
type notifiers []calls.Notifier

func (ns notifiers) Committed(events []calls.Event, hooks int) {
	for _, n := range ns {
		n.Committed(events, hooks)
	}
}
