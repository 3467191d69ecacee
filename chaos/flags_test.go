package chaos

import "flag"

// long runs the checks for minutes instead of seconds: go test ./chaos -chaos.long
var long = flag.Bool("chaos.long", false, "run the chaos and linearizability checks for minutes")
