//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockDir takes an exclusive lock on dir/muster.lock, so two embedded
// servers (of `muster up` or `muster nats`) never share one JetStream
// store: nats-server does not check, and two nodes of one cluster on one
// store would corrupt it. The lock file holds the holder's pid. The lock
// lasts until unlock is called or the process exits.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "muster.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := ""
			if b, err := os.ReadFile(f.Name()); err == nil && len(bytes.TrimSpace(b)) > 0 {
				holder = " (pid " + string(bytes.TrimSpace(b)) + ")"
			}
			return nil, fmt.Errorf("data directory %s is in use by another muster up or muster nats%s: one instance, one state; give each its own --data", dir, holder)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil // closing releases the lock
}
