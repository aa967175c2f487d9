//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/adminops"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// TestServiceReset: a service whose program fails is failing (0900/0004);
// once the program is fixed, `muster service reset` brings it back at
// once, naming the attach manager that reset it.
func TestServiceReset(t *testing.T) {
	env := harness.Start(t, broker.Config{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "fixed")
	script := filepath.Join(dir, "worker.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\n[ -f %q ] || { echo not fixed >&2; exit 1; }\nexec %q example echo\n", marker, exe)), 0o700); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("host:\n  name: cli-reset\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  grace: 2s\nservices:\n  - service: EXAMPLE/FIX/X\n    program: %s\n", dir, dir, script)
	path := filepath.Join(dir, "attach.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), &syncBuffer{}, stderr
		done <- a.RunContext(ctx, []string{"muster", "attach", "--config", path, serverFlag(env), "--log-level", "error"})
	}()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "serving 1 services") {
			return fmt.Errorf("attach not ready: %s", stderr)
		}
		return nil
	})
	if _, err := env.Client.Call(testutil.Context(t, 30*time.Second), "EXAMPLE/FIX/X", nil); !errors.Is(err, proto.ErrServiceFailing) {
		t.Fatalf("call: %v, want 0900/0004", err)
	}
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, nil, "service", "reset", serverFlag(env), "EXAMPLE/FIX/X")
	if !strings.HasPrefix(out, "reset EXAMPLE/FIX/X on cli-reset (was failing: replica exited (exit 1) before it registered); probe replica started\n") {
		t.Fatalf("reset printed %q", out)
	}
	// At once: brokers no longer answer 0900/0004, and the probe serves.
	got, err := env.Client.Call(testutil.Context(t, 10*time.Second), "EXAMPLE/FIX/X", []byte("back"))
	if err != nil || string(got) != "back" {
		t.Fatalf("call after reset: %q %v", got, err)
	}
	var res adminops.ResetResult
	if err := json.Unmarshal([]byte(run(t, nil, "service", "reset", serverFlag(env), "--json", "EXAMPLE/FIX/X")), &res); err != nil {
		t.Fatal(err)
	}
	if res.Service != "EXAMPLE/FIX/X" || len(res.Reset) != 1 || res.Reset[0].Attach != "cli-reset" || res.Reset[0].WasFailing != "" {
		t.Fatalf("--json: %+v", res)
	}
	for _, args := range [][]string{{"NOBODY/OFFERS/IT"}, {"bad"}, {}} {
		r := runApp(context.Background(), nil, append([]string{"service", "reset", serverFlag(env)}, args...)...)
		if r.err == nil {
			t.Errorf("service reset %v succeeded", args)
		}
	}
	cancel()
	if err := waitReturn(t, done, "attach"); err != nil {
		t.Fatalf("attach returned %v", err)
	}
}
