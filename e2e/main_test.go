package e2e

import (
	"os"
	"testing"

	"callsig/internal/testkit"
)

// TestMain gives the stories' PostgreSQL backends copies of one migrated
// database (testkit.Main): the package makes over a hundred.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m)) }
