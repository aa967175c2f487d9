// Package xdg finds Muster's per-user state directory by the XDG base
// directory spec: $XDG_STATE_HOME/muster when that is absolute, else
// ~/.local/state/muster.
package xdg

import (
	"errors"
	"os"
	"path/filepath"
)

// StateDir returns the muster directory under the user's XDG state home,
// joined with elem. It fails only when neither $XDG_STATE_HOME nor the home
// directory is an absolute path.
func StateDir(elem ...string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(base) {
		home, err := os.UserHomeDir()
		if err != nil || !filepath.IsAbs(home) {
			return "", errors.New("no state directory: set $XDG_STATE_HOME or $HOME to an absolute path")
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(append([]string{base, "muster"}, elem...)...), nil
}
