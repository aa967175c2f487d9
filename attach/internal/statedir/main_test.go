//go:build unix

package statedir

import (
	"os"
	"testing"

	"github.com/musterhq/muster/attach/internal/proctest"
)

// TestMain doubles as the helper process and fails the package if a helper
// process or a goroutine outlives the tests.
func TestMain(m *testing.M) {
	proctest.RunHelper(nil)
	os.Exit(proctest.Verify(m.Run()))
}
