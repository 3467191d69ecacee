package app

import (
	"context"
	"fmt"
	"time"

	"callsig/calls"
	"callsig/cluster"
	"callsig/db/postgres"
)

// clusterDeadlinePoll is the longest a node's scheduler goes without
// reading the earliest deadline in cluster mode (see calls.Config).
const clusterDeadlinePoll = time.Second

// newClusterPresence opens the presence pool (its own few connections, see
// postgres.Presence), builds the cluster presence reporting to svc and
// writes this node's first lease. With SQLite none of it exists: the hub
// alone is the presence, as before.
func (a *App) newClusterPresence(ctx context.Context, svc cluster.Service, clock calls.Clock) error {
	ps, err := postgres.OpenPresence(ctx, a.Config.DB, postgres.PresenceOptions{StatementTimeout: a.Config.PGStatementTimeout})
	if err != nil {
		return redactDSN(err, a.Config.DB)
	}
	a.presenceStore = ps
	registerPools(a.Registry, ps)
	a.Presence, err = cluster.NewPresence(cluster.PresenceOptions{
		Store: ps, Service: svc, Node: a.Config.NodeID, Lease: a.Config.presenceLease(), Clock: clock,
		Logger: a.log.With("component", "presence"), Registerer: a.Registry,
	})
	if err != nil {
		return err
	}
	if err := a.Presence.Join(ctx); err != nil {
		return fmt.Errorf("join the cluster presence: %w", err)
	}
	a.log.Info("cluster presence joined", "lease", a.Config.presenceLease())
	return nil
}
