package attach

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
)

// ErrLogClosed is returned by writes to a closed RotatingFile.
var ErrLogClosed = errors.New("attach: log file closed")

// RotatingFile is an io.WriteCloser writing to path, rotating to path.1 …
// path.N (keep N) when the file would exceed maxBytes. No file ever exceeds
// maxBytes: a write that does not fit is split across files. Safe for
// concurrent writes.
type RotatingFile struct {
	path     string
	maxBytes int64
	keep     int

	mu     sync.Mutex
	f      *os.File // nil after a failed rotation, reopened by the next write
	size   int64
	closed bool
}

// OpenRotatingFile opens path for appending, creating its parent directories
// (0700) and the file (0600) as needed. keep is how many rotated files
// (path.1 … path.keep) are kept; 0 means the file is just truncated.
func OpenRotatingFile(path string, maxBytes int64, keep int) (*RotatingFile, error) {
	if maxBytes <= 0 || keep < 0 {
		return nil, fmt.Errorf("attach: rotating file %s: bad limits maxBytes=%d keep=%d", path, maxBytes, keep)
	}
	r := &RotatingFile{path: path, maxBytes: maxBytes, keep: keep}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("attach: rotating file: %w", err)
	}
	if err := r.openLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

// Write appends p, rotating as often as needed so that no file exceeds
// maxBytes.
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, ErrLogClosed
	}
	n := 0
	for len(p) > 0 {
		if r.f == nil || r.size >= r.maxBytes {
			if err := r.rotateLocked(); err != nil {
				return n, err
			}
		}
		chunk := p[:min(int64(len(p)), r.maxBytes-r.size)]
		m, err := r.f.Write(chunk)
		n += m
		r.size += int64(m)
		if err != nil {
			return n, fmt.Errorf("attach: write log: %w", err)
		}
		p = p[m:]
	}
	return n, nil
}

// Close closes the file. Closing twice is a no-op.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// openLocked opens (or creates) path for appending and learns its size.
func (r *RotatingFile) openLocked() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("attach: open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("attach: open log: %w", err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// rotateLocked shifts path.(N-1) → path.N … path → path.1 and opens a new,
// empty path.
func (r *RotatingFile) rotateLocked() error {
	if r.f == nil {
		// An earlier rotation failed half-way: reopen, rotate only if full.
		if err := r.openLocked(); err != nil || r.size < r.maxBytes {
			return err
		}
	}
	err := r.f.Close()
	r.f = nil
	if err != nil {
		return fmt.Errorf("attach: rotate log: %w", err)
	}
	if r.keep == 0 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("attach: rotate log: %w", err)
		}
	} else {
		for i := r.keep - 1; i >= 1; i-- {
			err := os.Rename(r.rotated(i), r.rotated(i+1))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("attach: rotate log: %w", err)
			}
		}
		if err := os.Rename(r.path, r.rotated(1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("attach: rotate log: %w", err)
		}
	}
	return r.openLocked()
}

func (r *RotatingFile) rotated(i int) string { return r.path + "." + strconv.Itoa(i) }

// EnforceLogCap deletes the oldest regular files (by modification time)
// under dir, recursively, until the total size of all regular files there is
// at most total. Files named in skip (absolute paths, such as logs still
// open) count towards the total but are never deleted. It returns the bytes
// freed; a dir that does not exist holds nothing.
func EnforceLogCap(dir string, total int64, skip map[string]bool) (int64, error) {
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
