package proc

import (
	"errors"
	"os"
	"strconv"
	"syscall"
	"time"
)

// signalGroup sends sig to process group pgid. A group that is gone gives
// an error wrapping syscall.ESRCH.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 1 {
		return syscall.ESRCH // kill(-1) would reach every process we may signal
	}
	return syscall.Kill(-pgid, sig)
}

// waitGroupGone polls until no live (non-zombie) process is left in process
// group pgid, or stop is closed. It reports whether the group is gone.
func waitGroupGone(pgid int, stop <-chan struct{}) bool {
	step := time.Millisecond
	for {
		if !groupAlive(pgid) {
			return true
		}
		t := time.NewTimer(step)
		select {
		case <-stop:
			t.Stop()
			return !groupAlive(pgid)
		case <-t.C:
		}
		step = min(2*step, 50*time.Millisecond)
	}
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. Zombies count as gone: they hold no resources we care about, and
// whoever inherited them may never reap them.
func groupAlive(pgid int) bool {
	if err := signalGroup(pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true // no /proc: trust kill
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil {
			continue // gone meanwhile
		}
		if st.PGRP == pgid && st.State != 'Z' && st.State != 'X' {
			return true
		}
	}
	return false
}
