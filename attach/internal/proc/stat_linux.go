package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Stat is the part of /proc/<pid>/stat that the attach manager uses.
type Stat struct {
	State      byte   // 'R', 'S', 'Z' (zombie) …
	PPID       int    // parent
	PGRP       int    // process group
	StartTicks uint64 // field 22: start time in clock ticks after boot, exact and stable
}

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("attach: %w", err)
	}
	return parseStat(pid, b)
}

// parseStat parses the contents of /proc/<pid>/stat.
func parseStat(pid int, b []byte) (Stat, error) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime …; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("attach: malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("attach: malformed /proc/%d/stat", pid)
	}
	st := Stat{State: f[0][0]}
	var err error
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil {
		return Stat{}, fmt.Errorf("attach: /proc/%d/stat ppid: %w", pid, err)
	}
	if st.PGRP, err = strconv.Atoi(string(f[2])); err != nil {
		return Stat{}, fmt.Errorf("attach: /proc/%d/stat pgrp: %w", pid, err)
	}
	if st.StartTicks, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("attach: /proc/%d/stat starttime: %w", pid, err)
	}
	return st, nil
}

// bootID is this boot's id, read once; "" if the kernel does not say.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// Check reports whether id still names the very process it was taken from,
// still leading its own process group, and if not, why. Only then may its
// group be signalled: a PID that is gone or was reused (other start ticks,
// even within the same second, or another boot) is never touched. An Ident
// without start ticks (a record written by an older manager, which kept
// only a create time in whole seconds) is never taken for its process.
func (id Ident) Check() (bool, string) {
	switch {
	case id.PID <= 1 || id.PID == os.Getpid():
		// kill(-1) would reach every process we may signal.
		return false, "pid out of range"
	case id.StartTicks == 0:
		return false, "no start ticks recorded (an older record); not signalled"
	case id.BootID != bootID():
		return false, "recorded in another boot"
	}
	st, err := ReadStat(id.PID)
	switch {
	case err != nil:
		return false, "pid gone"
	case st.State == 'Z' || st.State == 'X':
		return false, "pid gone (zombie)"
	case st.StartTicks != id.StartTicks:
		return false, "pid reused"
	case st.PGRP != id.PID:
		return false, "no longer leads its process group"
	}
	return true, ""
}
