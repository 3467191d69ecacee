// Package testkit starts a real callsig (the same wiring as cmd/api) on a
// loopback port with a temporary SQLite file, mints tokens, and talks to it
// over real HTTP, validating every response against api/openapi.yaml, so
// each end-to-end test reads as the user story it checks.
package testkit
