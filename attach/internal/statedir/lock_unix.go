//go:build unix

package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock takes the state dir for this process: an exclusive flock on
// <dir>/lock, which then holds this process's pid. A second manager on the
// same state dir, in this process or another, gets an error wrapping
// ErrLocked at once, naming the dir and the holder's pid when it can be
// read. The lock lasts until unlock is called or the process exits; the
// file stays (removing it would let two holders lock two different files).
func (d Dir) Lock() (unlock func(), err error) {
	path := filepath.Join(string(d), "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("attach: lock state dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = "pid " + strconv.Itoa(pid)
				if pid == os.Getpid() {
					holder += " (this process)"
				}
			}
			return nil, fmt.Errorf("%w: %s is held by %s; give each attach manager its own state dir (muster up --data DIR, or host.state_dir)", ErrLocked, string(d), holder)
		}
		return nil, fmt.Errorf("attach: lock state dir: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
