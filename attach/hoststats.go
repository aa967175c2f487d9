package attach

import (
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/musterhq/muster/broker/proto"
)

// hostStats fills in the host's load figures (best effort: a figure the
// OS does not give stays zero).
func hostStats(ai *proto.AttachInfo) {
	if p, err := cpu.Percent(0, false); err == nil && len(p) > 0 {
		ai.CPUPercent = p[0]
	}
	if l, err := load.Avg(); err == nil {
		ai.Load1 = l.Load1
	}
	if v, err := mem.VirtualMemory(); err == nil {
		ai.MemFree, ai.MemTotal = v.Available, v.Total
	}
}
