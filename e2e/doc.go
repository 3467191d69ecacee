// Package e2e holds the end-to-end tests: each file is one user story,
// played against a real callsig (real HTTP on loopback, a real SQLite file,
// real SSE clients and webhook receivers) started by internal/testkit.
package e2e
