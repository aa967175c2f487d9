// Package logrot writes replica logs: a File rotates by size (path, path.1
// … path.N) so that no file exceeds its limit, and EnforceCap keeps a whole
// log directory within a total size.
package logrot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// ErrClosed is returned by writes to a closed File.
var ErrClosed = errors.New("attach: log file closed")

// File is an io.WriteCloser writing to path, rotating to path.1 …
// path.N (keep N) when the file would exceed maxBytes. No file ever exceeds
// maxBytes: a write that does not fit is split across files. Safe for
// concurrent writes.
type File struct {
	path     string
	maxBytes int64
	keep     int

	mu     sync.Mutex
	f      *os.File // nil after a failed rotation, reopened by the next write
	size   int64
	closed bool
}

// Open opens path for appending, creating its parent directories
// (0700) and the file (0600) as needed. keep is how many rotated files
// (path.1 … path.keep) are kept; 0 means the file is just truncated.
func Open(path string, maxBytes int64, keep int) (*File, error) {
	if maxBytes <= 0 || keep < 0 {
		return nil, fmt.Errorf("attach: rotating file %s: bad limits maxBytes=%d keep=%d", path, maxBytes, keep)
	}
	r := &File{path: path, maxBytes: maxBytes, keep: keep}
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
func (r *File) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, ErrClosed
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
func (r *File) Close() error {
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
func (r *File) openLocked() error {
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
func (r *File) rotateLocked() error {
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

func (r *File) rotated(i int) string { return r.path + "." + strconv.Itoa(i) }
