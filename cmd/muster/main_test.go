package main

import (
	"os"
	"testing"
)

// runMainEnv, set in a child's environment, makes this test binary run
// muster whatever its arguments.
const runMainEnv = "MUSTER_TEST_RUN_MAIN"

// TestMain lets the test binary stand in for the muster binary: the attach
// manager of `muster up` starts the demo replicas as `<this binary>
// example echo`, which must serve, not run the tests; and the signal tests
// run `<this binary> up|broker|attach|call|converse ...` as real child
// processes.
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) != "" { // any command, such as a shell completion's request
		main()
		return
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "example", "up", "nats", "broker", "attach", "call", "converse":
			main()
			return
		}
	}
	os.Exit(m.Run())
}
