//go:build unix

package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockDir(dir)
	if err == nil {
		t.Fatal("second lock succeeded")
	}
	// The refusal names the dir, the holder and the way out.
	for _, want := range []string{dir, "pid " + strconv.Itoa(os.Getpid()), "--data"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second lock: %v; want it to name %q", err, want)
		}
	}
	unlock()
	unlock2, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
