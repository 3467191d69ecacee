// Package chaos holds the checks that prove callsig's guarantees over
// random concurrent histories rather than chosen scenarios: a
// linearizability check of the call state machine (porcupine, against a
// sequential model written from the seed's tables) and crash checks. It has
// no code of its own: everything is in its tests, which start the real
// server and talk to it over real HTTP. `go test ./chaos -chaos.long` runs
// them for minutes instead of seconds.
package chaos
