package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The systemd units in deploy/systemd run real commands: every flag of
// their ExecStart exists on that command, and the attach manager's unit
// lets the manager supervise its replicas (KillMode=process) with enough
// time to quiesce them (TimeoutStopSec ≥ the default grace + 2s).
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob(filepath.Join("..", "..", "deploy", "systemd", "*.service"))
	if err != nil || len(units) < 2 {
		t.Fatalf("units: %v %v", units, err)
	}
	a := app()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		settings := map[string]string{}
		for _, line := range strings.Split(text, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
				settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		fields := strings.Fields(settings["ExecStart"])
		if len(fields) < 2 || filepath.Base(fields[0]) != "muster" {
			t.Fatalf("%s: ExecStart %q does not run muster", u, settings["ExecStart"])
		}
		cmd := a.Command(fields[1])
		if cmd == nil {
			t.Fatalf("%s: no command %q", u, fields[1])
		}
		known := map[string]bool{}
		for _, f := range cmd.Flags {
			for _, n := range f.Names() {
				known[n] = true
			}
		}
		for _, f := range fields[2:] {
			if name, ok := strings.CutPrefix(f, "--"); ok && !known[strings.SplitN(name, "=", 2)[0]] {
				t.Errorf("%s: muster %s has no flag %s", u, fields[1], f)
			}
		}
		if fields[1] == "attach" {
			if settings["KillMode"] != "process" {
				t.Errorf("%s: KillMode=%s, want process (the manager supervises its replicas)", u, settings["KillMode"])
			}
			if s, _ := strconv.Atoi(settings["TimeoutStopSec"]); s < 12 {
				t.Errorf("%s: TimeoutStopSec=%s, want at least the default grace (10s) + 2s", u, settings["TimeoutStopSec"])
			}
		}
	}
}
