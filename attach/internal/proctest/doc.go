// Package proctest is the test helper process of the attach manager's
// packages (after Nomad's helper/testtask): a test binary whose TestMain
// calls RunHelper doubles as a fake replica that can sleep, crash, spam
// its output, start grandchildren or ignore SIGTERM. It also tracks the
// processes a test starts, and Verify fails the package when any of them,
// or any goroutine, outlives the tests.
//
// It runs on Unix only (the fake replicas use Unix signals).
package proctest
