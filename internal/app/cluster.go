package app

import (
	"callsig/calls"
	"callsig/cluster"
	"callsig/internal/redact"
)

// fanout is the node's part in cluster delivery: with NATS configured
// (PostgreSQL only; validateCluster refuses SQLite with NATS) the
// cluster.Fanout that announces local commits to the other nodes and
// wakes local streams for theirs. nil without NATS: its methods then do
// nothing, and the node delivers what other nodes commit through the
// hub's periodic catch-up only (single node, or a cluster without NATS).
type fanout struct {
	*cluster.Fanout
	url string // CALLSIG_NATS_URL, to keep its password or token out of errors
}

// newFanout builds the fan-out for the hub's streams (not connected yet:
// see connect), or returns nil without NATS, saying so for PostgreSQL.
func (a *App) newFanout(hub cluster.Waker) (*fanout, error) {
	if a.Config.NATSURL == "" {
		if IsPostgresDSN(a.Config.DB) {
			a.log.Info("PostgreSQL without NATS: single node (events committed by other nodes reach this node's streams only at the periodic catch-up, about 1 s)")
		}
		return nil, nil
	}
	f, err := cluster.New(cluster.Options{
		URL: a.Config.NATSURL, NodeID: a.Config.NodeID, Waker: hub, Subject: a.Config.NATSPrefix + ".wake",
		Logger: a.log.With("component", "cluster"), Registerer: a.Registry,
	})
	if err != nil {
		return nil, redact.TokenErr(err, a.Config.NATSURL)
	}
	return &fanout{f, a.Config.NATSURL}, nil
}

// notifiers returns the fan-out as the service's notifier, if any.
func (f *fanout) notifiers() []calls.Notifier {
	if f == nil {
		return nil
	}
	return []calls.Notifier{f.Fanout}
}

// parts returns the fan-out's background part, if any.
func (f *fanout) parts() []part {
	if f == nil {
		return nil
	}
	return []part{{"cluster wake-ups", f.Run}}
}

// connect starts the NATS connection; a server that is down is retried in
// the background and never fails startup.
func (f *fanout) connect() error {
	if f == nil {
		return nil
	}
	return redact.TokenErr(f.Connect(), f.url) // the NATS URL may hold a password or a token
}

// close drains and closes the connection if Run did not.
func (f *fanout) close() {
	if f != nil {
		f.Close()
	}
}
