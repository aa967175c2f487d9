package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

// writeAttachConfig writes a config serving EXAMPLE/ECHO/ECHO with this
// test binary (`<binary> example echo`), its dirs in a temp dir.
func writeAttachConfig(t *testing.T, extra string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	yaml := fmt.Sprintf("host:\n  name: cli-test\n  state_dir: %s/state\n  temp_dir: %s/tmp\n  log_dir: %s/logs\n  grace: 2s\nservices:\n  - service: EXAMPLE/ECHO/ECHO\n    program: %s\n    args: [example, echo]\n    max: 2\n    idle_timeout: 30s\n%s", dir, dir, dir, exe, extra)
	path := filepath.Join(dir, "attach.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAttachCheck(t *testing.T) {
	good := writeAttachConfig(t, "")
	if out := run(t, nil, "attach", "--check", good); !strings.Contains(out, "ok: 1 services") {
		t.Fatalf("check good: %q", out)
	}
	bad := writeAttachConfig(t, "    maxx: 3\n")
	r := runApp(context.Background(), nil, "attach", "--check", bad)
	if r.err == nil || !strings.Contains(r.err.Error(), bad+":13:5: services[0]: unknown field \"maxx\"") {
		t.Fatalf("check bad: %v", r.err)
	}
	if r := runApp(context.Background(), nil, "attach"); r.err == nil || !strings.Contains(r.err.Error(), "--config") {
		t.Fatalf("no config: %v", r.err)
	}
}

func TestAttachServesFromConfig(t *testing.T) {
	env := harness.Start(t, broker.Config{})
	path := writeAttachConfig(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), &syncBuffer{}, stderr
		done <- a.RunContext(ctx, []string{"muster", "attach", "--config", path, serverFlag(env), "--log-level", "warn"})
	}()
	testutil.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "serving 1 services") {
			return fmt.Errorf("attach not ready: %s", stderr)
		}
		return nil
	})
	got, err := env.Client.Call(testutil.Context(t, 20*time.Second), "EXAMPLE/ECHO/ECHO", []byte("from zero"))
	if err != nil || string(got) != "from zero" {
		t.Fatalf("cold call: %q %v", got, err)
	}
	cancel()
	if err := waitReturn(t, done, "attach"); err != nil {
		t.Fatalf("attach returned %v", err)
	}
}
