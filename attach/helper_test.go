//go:build unix

package attach

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/musterhq/muster/attach/internal/proctest"
)

// TestMain doubles as the helper process (proctest's fake replicas and the
// worker modes of workerhelper_test.go) and fails the package if a replica
// started by a manager, a helper process or a goroutine outlives the
// tests.
func TestMain(m *testing.M) {
	proctest.RunHelper(workerHelper)
	pidDir, err := os.MkdirTemp("", "attach-test-pids-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(pidDirEnv, pidDir)
	code := m.Run()
	deadline := time.Now().Add(5 * time.Second)
	for len(managedLeaks(pidDir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if leaked := managedLeaks(pidDir); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "attach: replicas started by managers outlived the tests (killed now): %v\n", leaked)
		for _, pid := range leaked {
			_ = killPid(pid)
		}
		code = 1
	}
	_ = os.RemoveAll(pidDir)
	os.Exit(proctest.Verify(code))
}
