package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the muster binary: the attach
// manager of `muster up` starts the demo replicas as `<this binary>
// example echo`, which must serve, not run the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "example" {
		main()
		return
	}
	os.Exit(m.Run())
}
