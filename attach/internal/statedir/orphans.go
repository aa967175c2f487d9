package statedir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/musterhq/muster/attach/internal/proc"
)

// CleanReport says what CleanOrphans did.
type CleanReport struct {
	Stopped     []Record // replicas of an earlier run that were still running and were stopped
	Stale       []Record // records whose PID is gone or now names another process
	RemovedDirs []string // temp dirs removed
}

// CleanOrphans stops what an earlier run of the manager left behind: recs,
// the records Load returned before this run started anything. For each: if
// the PID still names the very process recorded (same start ticks and boot,
// still leading its own process group; see proc.Ident.Check), its group is
// stopped by proc.StopGroup (SIGTERM, up to grace, SIGKILL), all such groups
// at once, and with no grace once ctx has ended; a PID that is gone, was
// never started (0) or now names another process is never signalled and
// the record is reported Stale. A reserved record (PID 0: the manager died
// between starting the process and recording it) is matched to its process
// by the replica id in the process's environment (findReplica). Then the record's temp dir (only if it lies
// under tempRoot) and the record are removed; a group that survives SIGKILL
// keeps both, for a later try. Nothing else under tempRoot is touched: a
// manager removes only the temp dirs it recorded.
func (d Dir) CleanOrphans(ctx context.Context, recs []Record, tempRoot string, grace time.Duration, log *slog.Logger) (CleanReport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		rep  CleanReport
		errs []error
	)
	// Identify first, then stop every orphan at once: each may take its
	// grace, and side by side they take one grace in all, not one each. A
	// ctx that ends cuts the grace short (SIGKILL at once).
	stopErrs := make([]error, len(recs))
	ours := make([]bool, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		if r.PID == 0 {
			// Reserved: the manager died before it recorded the PID. The
			// process may have started all the same: find it by the
			// replica id in its environment.
			if pid := findReplica(r.ID); pid > 0 {
				log.Info("replica found by its environment: its manager died before recording it", "replica", r.ID, "pid", pid)
				recs[i].PID = pid
				ours[i] = true
				log.Info("stopping orphaned replica", "replica", r.ID, "service", r.Service, "pid", pid)
				wg.Go(func() { stopErrs[i] = proc.StopGroup(ctx, pid, grace) })
				continue
			}
		}
		ok, why := r.Ident().Check()
		if r.PID == 0 {
			why = "reserved; its process was never started"
		}
		if !ok {
			log.Info("stale replica record", "replica", r.ID, "pid", r.PID, "reason", why)
			continue
		}
		ours[i] = true
		log.Info("stopping orphaned replica", "replica", r.ID, "service", r.Service, "pid", r.PID)
		wg.Go(func() { stopErrs[i] = proc.StopGroup(ctx, r.PID, grace) })
	}
	wg.Wait()
	for i, r := range recs {
		r = recs[i]
		switch {
		case ours[i] && stopErrs[i] != nil:
			log.Warn("orphaned replica survived", "replica", r.ID, "pid", r.PID, "err", stopErrs[i])
			errs = append(errs, fmt.Errorf("attach: orphan %s (pid %d): %w", r.ID, r.PID, stopErrs[i]))
			continue // keep its record and temp dir for a later try
		case ours[i]:
			rep.Stopped = append(rep.Stopped, r)
		default:
			rep.Stale = append(rep.Stale, r)
		}
		if r.TempDir != "" {
			if within(tempRoot, r.TempDir) {
				if removed, err := removeDir(r.TempDir); err != nil {
					errs = append(errs, err)
				} else if removed {
					rep.RemovedDirs = append(rep.RemovedDirs, r.TempDir)
				}
			} else {
				log.Warn("record's temp dir is outside the temp root; left alone", "replica", r.ID, "dir", r.TempDir, "root", tempRoot)
			}
		}
		if err := d.Remove(r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// within reports whether path lies strictly inside root.
func within(root, path string) bool {
	if root == "" || !filepath.IsAbs(path) {
		return false
	}
	rel, err := filepath.Rel(filepath.Clean(root), filepath.Clean(path))
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// removeDir removes path and everything under it, reporting whether there
// was anything to remove.
func removeDir(path string) (bool, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := os.RemoveAll(path); err != nil {
		return false, fmt.Errorf("attach: remove %s: %w", path, err)
	}
	return true, nil
}
