package worker

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// madvPopulateRead asks the kernel to fill the page tables of a mapping
// for reading (Linux 5.14+; MADV_POPULATE_READ).
const madvPopulateRead = 22

// prefault maps in the program's own code and read-only data, so a
// standby's first request does not take a page fault for each page of code
// it runs for the first time (the standby has run its start, but never
// its serving path). Best effort: errors (an older kernel) are ignored.
func prefault() {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "start-end perms offset dev inode path"
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || fields[1][0] != 'r' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), madvPopulateRead)
	}
}
