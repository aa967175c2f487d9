//go:build !linux

package statedir

// findReplica finds nothing where there is no /proc to read.
func findReplica(string) int { return 0 }
