// Package e2e holds the end-to-end tests: each file is one user story,
// played against a real callsig (real HTTP on loopback, a real SQLite file,
// real SSE clients and webhook receivers) started by internal/testkit.
//
// Which tests run in parallel: the stories of testkit.Matrix; the tests
// that mostly wait (leases, timeouts, a stopped PostgreSQL or NATS; the
// cluster's, with a database and NATS subjects of their own), so that they
// wait while the others compute; and the crash tests, which check what
// survives a kill, not how fast (their waits are bounds of seconds); and
// the short ones that time nothing (errors, tokens, webhooks on the fake
// clock, the served files). Tests
// that measure how long something takes under a load of their own
// (stalls, many streams, the browser's) run alone, one after the other,
// where their bounds mean what they say. The PostgreSQL backends start
// on copies of one database migrated once (TestMain, testkit.Main).
package e2e
