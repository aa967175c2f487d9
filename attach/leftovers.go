package attach

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/musterhq/muster/attach/internal/statedir"
)

// Leftovers counts what the replicas of a manager with config cfg left
// behind: records in its state dir and entries in its temp dir. Both are
// zero after a clean Shutdown; the next Start cleans up after a manager
// that could not shut down.
func Leftovers(cfg *Config) (records, tempDirs int, err error) {
	recs, err := statedir.Dir(cfg.Host.StateDir).Load()
	ents, derr := os.ReadDir(cfg.Host.TempDir)
	if errors.Is(derr, fs.ErrNotExist) {
		derr = nil
	}
	if derr != nil {
		derr = fmt.Errorf("attach: leftovers: %w", derr)
	}
	return len(recs), len(ents), errors.Join(err, derr)
}
