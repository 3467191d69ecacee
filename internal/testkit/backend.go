package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"testing"

	"callsig/internal/app"
)

// Backend is what a test server runs on. The end-to-end stories run on
// each (see Matrix); the zero value is SQLite.
type Backend int

const (
	// SQLite is the embedded default: one node, one file.
	SQLite Backend = iota
	// Postgres is one node on a fresh PostgreSQL database.
	Postgres
	// Cluster is three nodes on one fresh PostgreSQL database, woken by
	// the machine's NATS (nats://127.0.0.1:4222), behind a round-robin
	// balancer.
	Cluster
)

// Backends are every backend, in the order Matrix runs them.
var Backends = []Backend{SQLite, Postgres, Cluster}

func (b Backend) String() string {
	switch b {
	case Postgres:
		return "postgres"
	case Cluster:
		return "cluster"
	}
	return "sqlite"
}

// NATSURL is the NATS server cluster tests use: the machine's.
const NATSURL = "nats://127.0.0.1:4222"

// WithBackend runs the server on b.
func WithBackend(b Backend) Option { return func(s *settings) { s.backend = b } }

// WithNATS makes a cluster use the NATS server at url (a test's own, see
// StartNATS) instead of the machine's.
func WithNATS(url string) Option { return func(s *settings) { s.natsURL = url } }

// WithDSN rewrites the PostgreSQL DSN the nodes connect with (the
// database is still created and dropped through the real server): the
// tests of an unreachable PostgreSQL point the nodes at a TCPProxy.
func WithDSN(rewrite func(dsn string) string) Option {
	return func(s *settings) { s.rewriteDSN = rewrite }
}

// Matrix runs story once on each backend, as subtests named after them, so
// one end-to-end test covers SQLite, PostgreSQL and a cluster with the same
// code. story passes opt to Start with its other options.
//
// The story runs in parallel with the other parallel tests, and so do its
// backends (go test's -parallel bounds how many at once): each backend has
// its own server, database and NATS prefix, and much of a story's time is
// spent waiting on PostgreSQL. A story must therefore keep all its state
// inside story, and cannot use t.Setenv.
func Matrix(t *testing.T, story func(t *testing.T, opt Option)) {
	t.Helper()
	t.Parallel()
	for _, b := range Backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			story(t, WithBackend(b))
		})
	}
}

// nodes is how many apps the backend runs.
func (b Backend) nodes() int {
	if b == Cluster {
		return 3
	}
	return 1
}

// configure points cfg at the backend's database: a fresh PostgreSQL one
// for Postgres and Cluster, and NATS for Cluster, with a subject prefix of
// the test's own, so tests sharing the machine's NATS do not wake each
// other.
func (st *settings) configure(t testing.TB) app.Config {
	b, cfg := st.backend, &st.cfg
	if b == SQLite {
		return *cfg
	}
	cfg.DB = newDatabase(t)
	if st.rewriteDSN != nil {
		cfg.DB = st.rewriteDSN(cfg.DB)
	}
	if b == Cluster {
		cfg.NATSURL = NATSURL
		if st.natsURL != "" {
			cfg.NATSURL = st.natsURL
		}
		var r [4]byte
		_, _ = rand.Read(r[:])
		cfg.NATSPrefix = "callsig-test-" + hex.EncodeToString(r[:])
	}
	return *cfg
}
