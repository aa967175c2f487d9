//go:build !linux

package proc

import (
	"syscall"
)

// Supported reports whether this OS can run replicas.
const Supported = false

// Start returns ErrUnsupported: replicas need Linux.
func Start(spec Spec) (*Proc, error) {
	if spec.Log != nil {
		_ = spec.Log.Close()
	}
	return nil, ErrUnsupported
}

// Signal returns ErrUnsupported.
func (p *Proc) Signal(syscall.Signal) error { return ErrUnsupported }

// Stat is the part of /proc/<pid>/stat that the attach manager uses.
type Stat struct {
	State      byte
	PPID       int
	PGRP       int
	StartTicks uint64
}

// ReadStat returns ErrUnsupported.
func ReadStat(int) (Stat, error) { return Stat{}, ErrUnsupported }

// Check reports that no process can be recognised here.
func (id Ident) Check() (bool, string) { return false, ErrUnsupported.Error() }

func signalGroup(int, syscall.Signal) error { return ErrUnsupported }

func waitGroupGone(int, <-chan struct{}) bool { return false }

// SignalLeader returns ErrUnsupported.
func (p *Proc) SignalLeader(syscall.Signal, func() error) error { return ErrUnsupported }
