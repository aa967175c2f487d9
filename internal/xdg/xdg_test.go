package xdg

import (
	"path/filepath"
	"testing"
)

func TestStateDir(t *testing.T) {
	tests := []struct {
		name, state, home string
		want              string
		fails             bool
	}{
		{name: "XDG_STATE_HOME wins", state: "/x/state", home: "/home/u", want: "/x/state/muster/a"},
		{name: "relative XDG_STATE_HOME ignored", state: "rel", home: "/home/u", want: "/home/u/.local/state/muster/a"},
		{name: "unset", home: "/home/u", want: "/home/u/.local/state/muster/a"},
		{name: "no absolute home", home: "rel", fails: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("XDG_STATE_HOME", tt.state)
			t.Setenv("HOME", tt.home)
			got, err := StateDir("a")
			if tt.fails {
				if err == nil {
					t.Fatalf("StateDir = %q, want an error", got)
				}
				return
			}
			if err != nil || got != filepath.FromSlash(tt.want) {
				t.Fatalf("StateDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
