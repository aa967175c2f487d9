package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cost is what this process spent: CPU time (user + system) and read and
// write system calls. The warm and conv scenarios run client, server and
// replicas in one process, so the difference over a round is the whole
// system's cost of that round's calls.
type cost struct {
	cpu      time.Duration
	syscalls int64 // reads + writes (/proc/self/io; 0 where there is none)
}

func costNow() cost {
	var c cost
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return c
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && (k == "syscr" || k == "syscw") {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			c.syscalls += n
		}
	}
	return c
}

func (c cost) sub(o cost) cost { return cost{cpu: c.cpu - o.cpu, syscalls: c.syscalls - o.syscalls} }
func (c cost) add(o cost) cost { return cost{cpu: c.cpu + o.cpu, syscalls: c.syscalls + o.syscalls} }
