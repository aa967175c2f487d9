package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v3/process"
)

// What a process costs, read from /proc (Linux): its CPU time, its
// resident memory and its children. The host scenario measures the
// broker and the attach manager as processes of their own this way.

// cpuTime is the CPU time process pid has used so far: the sum of its
// threads' run times in /proc/<pid>/task/*/schedstat (nanoseconds), or
// user + system time from /proc/<pid>/stat (clock ticks, 10 ms) where
// schedstat is missing. The ticks are too coarse for a process that
// sleeps most of a few seconds; the run times are exact.
func cpuTime(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err == nil {
		var sum time.Duration
		ok := true
		for _, t := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "schedstat"))
			if err != nil {
				if os.IsNotExist(err) {
					continue // the thread exited in between
				}
				ok = false
				break
			}
			f := strings.Fields(string(b))
			if len(f) == 0 {
				ok = false
				break
			}
			ns, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				ok = false
				break
			}
			sum += time.Duration(ns)
		}
		if ok {
			return sum, nil
		}
	}
	p, err := process.NewProcess(int32(pid))
	if err != nil {
		return 0, err
	}
	t, err := p.Times()
	if err != nil {
		return 0, err
	}
	return time.Duration((t.User + t.System) * float64(time.Second)), nil
}

// rss is process pid's resident set size in bytes (VmRSS).
func rss(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// cpuSample is the CPU time of a set of processes at one moment.
type cpuSample struct {
	at   time.Time
	used map[int]time.Duration
}

func sampleCPU(pids []int) cpuSample {
	s := cpuSample{at: time.Now(), used: make(map[int]time.Duration, len(pids))}
	for _, pid := range pids {
		if d, err := cpuTime(pid); err == nil {
			s.used[pid] = d
		}
	}
	return s
}

// percentSince is the CPU the processes of s used between before and s,
// in % of one core; processes missing from either sample count nothing.
func (s cpuSample) percentSince(before cpuSample) float64 {
	var used time.Duration
	for pid, d := range s.used {
		if b, ok := before.used[pid]; ok {
			used += d - b
		}
	}
	wall := s.at.Sub(before.at)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(used) / float64(wall)
}
