package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster runs: -spawn -nodes N -postgres URL [-nats URL] starts N server
// processes on one PostgreSQL database; -urls drives nodes already running.
// The load is spread so that every delivery the load times crosses nodes:
// a user's stream is on one node and the request that makes the event goes
// to another (see pairRoute).

// node is one server of the run.
type node struct {
	index  int
	url    string
	base   *url.URL
	client *client
	srv    *server // nil unless spawned
}

// checkCluster validates the cluster flags and settles how many nodes
// there are. A single-node SQLite run (no cluster flag) is left as it was.
func (c *config) checkCluster() error {
	if c.nodes < 0 {
		return errors.New("-nodes must be at least 1")
	}
	if len(c.urls) > 0 {
		if c.spawn {
			return errors.New("-urls names running nodes; with -spawn the load generator starts its own (-nodes)")
		}
		if c.nodes != 0 && c.nodes != len(c.urls) {
			return fmt.Errorf("-nodes %d but %d -urls", c.nodes, len(c.urls))
		}
		c.nodes = len(c.urls)
	}
	if c.nodes == 0 {
		c.nodes = 1
	}
	if !c.spawn && (c.postgres != "" || c.nats != "" || c.postgresFresh) {
		return errors.New("-postgres, -postgres-fresh and -nats configure spawned nodes (-spawn); running nodes were configured when they started")
	}
	if !c.spawn && len(c.urls) == 0 && c.nodes > 1 {
		return errors.New("-nodes without -spawn: give the running nodes with -urls")
	}
	if c.postgres != "" && !isPostgresURL(c.postgres) {
		return errors.New("-postgres must be a postgres:// or postgresql:// URL")
	}
	if c.postgresFresh && c.postgres == "" {
		return errors.New("-postgres-fresh needs -postgres (the server to create the database on)")
	}
	if c.spawn && c.nodes > 1 && c.postgres == "" {
		return errors.New("-nodes more than 1 needs -postgres: a SQLite file serves one node")
	}
	if c.nats != "" && c.postgres == "" {
		return errors.New("-nats needs -postgres: the server refuses NATS with a SQLite file")
	}
	if c.nodes > 1 && c.mode != "cycle" && c.mode != "deadlines" {
		return fmt.Errorf("mode %s runs against one node; cycle and deadlines spread over -nodes", c.mode)
	}
	return nil
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// cluster says whether the run is anything but the single SQLite server
// of before: the cluster figures (per node, backend) are reported only then,
// so single-node SQLite output stays comparable with docs/benchmarks.md.
func (c *config) cluster() bool { return c.nodes > 1 || c.postgres != "" }

// route is which node each part of pair k's cycle goes to: both streams of
// the pair on one node, the invitation (delivered to the invitee's stream)
// to the next node, and the acceptance (delivered to the caller's stream)
// to the previous one, which with 3 nodes is a third node (the issue's
// story: stream on A, invite on B, accept on C). With one node everything
// is node 0.
type route struct{ streams, invite, accept int }

func pairRoute(k, nodes int) route {
	s := k % nodes
	return route{streams: s, invite: (s + 1) % nodes, accept: (s + nodes - 1) % nodes}
}

// spawnNodes starts cfg.nodes servers: one on a SQLite file as before, or
// all on one PostgreSQL database (made for the run with -postgres-fresh),
// each with its own node id and port and the same JWT secret. The first
// builds the binary, the others reuse it; they start one after the other,
// so the first runs the migrations alone.
func (t *target) spawnNodes(ctx context.Context) ([]*server, error) {
	cfg := t.cfg
	dsn := cfg.postgres
	if cfg.postgresFresh {
		var err error
		if dsn, t.dropDB, err = freshDatabase(ctx, cfg.postgres); err != nil {
			return nil, err
		}
		fmt.Fprintf(t.log, "loadgen: created database %s\n", databaseName(dsn))
	}
	var srvs []*server
	fail := func(err error) ([]*server, error) {
		for _, s := range srvs {
			s.kill()
			s.cleanup()
		}
		return nil, err
	}
	o := spawnOptions{bin: cfg.serverBin, synchronous: cfg.synchronous, logLevel: cfg.serverLogLevel, extra: strings.Fields(cfg.serverFlags), postgres: dsn, nats: cfg.nats}
	if t.hooks != nil {
		o.env = t.hooks.env()
	}
	for i := range cfg.nodes {
		if dsn == "" {
			fmt.Fprintf(t.log, "loadgen: starting a server (synchronous=%s)…\n", cfg.synchronous)
		} else {
			o.nodeID = fmt.Sprintf("%s-n%d", t.prefix, i)
			fmt.Fprintf(t.log, "loadgen: starting node %d of %d (%s) on PostgreSQL database %s, NATS %q…\n", i+1, cfg.nodes, o.nodeID, databaseName(dsn), cfg.nats)
		}
		s, err := spawn(ctx, o)
		if err != nil {
			return fail(fmt.Errorf("node %d: %w", i, err))
		}
		srvs = append(srvs, s)
		// A binary built by the first node lives in its directory, removed
		// only once every node has stopped (target.close).
		o.bin, o.secret = s.bin, s.secret
	}
	return srvs, nil
}

// freshDatabase creates callsig_load_<random> on the server admin names
// (connecting to admin's own database) and returns its URL and how to drop
// it.
func freshDatabase(ctx context.Context, admin string) (string, func(context.Context) error, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, fmt.Errorf("-postgres: %w", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "callsig_load_" + hex.EncodeToString(b)
	exec := func(ctx context.Context, sql string) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("-postgres-fresh: create database %s: %w", name, err)
	}
	drop := func(ctx context.Context) error {
		// FORCE: a node killed mid-run may leave a session behind.
		if err := exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}

// databaseName is the database of a postgres:// URL, for the log (never
// the URL itself, which may hold a password).
func databaseName(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "?"
	}
	return u.Host + u.Path
}
