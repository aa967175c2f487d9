//go:build !unix

package statedir

// Lock does nothing where flock is missing (the attach manager runs on
// Linux only).
func (d Dir) Lock() (unlock func(), err error) { return func() {}, nil }
