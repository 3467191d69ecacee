//go:build !race

package e2e

// raceBuild is whether this test binary runs with the race detector: the
// server binary the crash tests run is built the same way (buildServer).
const raceBuild = false
