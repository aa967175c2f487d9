//go:build !linux

package worker

func prefault() {}
