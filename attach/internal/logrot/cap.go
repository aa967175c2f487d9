package logrot

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// EnforceCap deletes the oldest regular files (by modification time)
// under dir, recursively, until the total size of all regular files there is
// at most total. Files named in skip (absolute paths, such as logs still
// open) count towards the total but are never deleted. It returns the bytes
// freed; a dir that does not exist holds nothing.
func EnforceCap(dir string, total int64, skip map[string]bool) (int64, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, fmt.Errorf("attach: log cap: %w", err)
	}
	skipped := make(map[string]bool, len(skip))
	for p, ok := range skip {
		if ok {
			skipped[filepath.Clean(p)] = true
		}
	}
	type file struct {
		path string
		size int64
		mod  int64
	}
	var (
		files []file
		sum   int64
		errs  []error
	)
	err = filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // vanished while we walked
			}
			errs = append(errs, err)
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			return nil
		}
		sum += fi.Size()
		if !skipped[path] {
			files = append(files, file{path, fi.Size(), fi.ModTime().UnixNano()})
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	slices.SortFunc(files, func(a, b file) int {
		return cmp.Or(cmp.Compare(a.mod, b.mod), cmp.Compare(a.path, b.path))
	})
	var freed int64
	for _, f := range files {
		if sum <= total {
			break
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		sum -= f.size
		freed += f.size
	}
	if len(errs) > 0 {
		return freed, fmt.Errorf("attach: log cap %s: %w", dir, errors.Join(errs...))
	}
	return freed, nil
}
